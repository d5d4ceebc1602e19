"""Thousands of connections under a shell's open-file limit: real processes under real limits."""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import batchrun_cmd, cli_env, job_file, prompts, read_jsonl, write_jsonl

SOFT, HARD = resource.getrlimit(resource.RLIMIT_NOFILE)


def _under(soft: int, hard: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return limit


def _run(argv: list[str], limit: Callable[[], None], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=cli_env(),
                          preexec_fn=limit)


def _sim_job(tmp_path: Path, lines: int, latency_s: float) -> Path:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(lines))
    return job_file(tmp_path, source, extra=f'base_url = "sim"\n[sim]\nlatency = {latency_s}\n')


@pytest.mark.skipif(HARD != resource.RLIM_INFINITY and HARD < 3200, reason="hard open-file limit below 3,200")
def test_concurrency_3000_under_ulimit_1024_raises_the_soft_limit_and_finishes(tmp_path: Path) -> None:
    job = _sim_job(tmp_path, 4000, 1.5)
    hard = HARD if HARD != resource.RLIM_INFINITY else 65536

    done = _run(batchrun_cmd("run", job, "--concurrency", "3000", "--no-progress"), _under(1024, hard))

    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "open files" not in done.stderr
    results = read_jsonl(tmp_path / "out.jsonl")
    assert {r["custom_id"] for r in results} == {f"p{i}" for i in range(4000)}


def test_a_hard_limit_too_low_caps_the_connections_with_one_notice(tmp_path: Path) -> None:
    job = _sim_job(tmp_path, 1000, 0.2)

    # Without --no-progress: that option keeps only the notices of a stop.
    done = _run(batchrun_cmd("run", job, "--concurrency", "1000"), _under(256, 256))

    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    notices = [line for line in done.stderr.splitlines() if "ulimit -n" in line]
    assert len(notices) == 1
    assert "running 192 connections" in notices[0] and "ulimit -n 1064" in notices[0]
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 1000


# Holds most of the process's open files before the CLI starts, as a leaky host program or a
# library might: the limit is high enough for the concurrency, the free descriptors are not.
_CROWDED = """
import os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (320, 320))
held = [os.open(os.devnull, os.O_RDONLY) for _ in range(300 - 30)]
from batchrun.cli import main
sys.argv = ["batchrun", *sys.argv[1:]]
main()
"""


def test_running_out_of_open_files_midway_is_a_clean_resumable_stop(tmp_path: Path) -> None:
    job = _sim_job(tmp_path, 400, 0.05)
    argv = [sys.executable, "-c", _CROWDED, "run", str(job), "--concurrency", "64", "--no-progress"]

    stopped = _run(argv, _under(SOFT, HARD))

    assert stopped.returncode == 3, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    assert "too many open files (EMFILE)" in stopped.stderr and "ulimit -n" in stopped.stderr
    finished = _run(batchrun_cmd("run", job, "--no-progress"), _under(SOFT, HARD))
    assert finished.returncode == 0, finished.stderr[-2000:]
    results = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(r["custom_id"] for r in results) == sorted(f"p{i}" for i in range(400))
