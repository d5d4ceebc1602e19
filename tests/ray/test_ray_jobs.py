"""A sharded job on a real 2-node Ray cluster against the real simulator: the guarantees of one process."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.conftest import batchrun_cmd, cli_env, job_file, prompts, read_jsonl, write_jsonl

pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]


def _env(cluster) -> dict[str, str]:
    return cli_env(**cluster.env)


def _run(cluster, *args: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(batchrun_cmd("run", *args), capture_output=True, text=True, timeout=timeout,
                          env=_env(cluster))


def _start(cluster, *args: str | Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(batchrun_cmd("run", *args), env=_env(cluster), stdout=out,
                                stderr=subprocess.STDOUT)


def _wait(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _job(tmp_path: Path, sim, n: int, extra: str = "", max_tokens: int = 8) -> tuple[Path, Path]:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(n, max_tokens=max_tokens))
    out = tmp_path / "out.jsonl"
    return job_file(tmp_path, source, output=out, extra=f'base_url = "{sim.base_url}"\n{extra}'), out


def _exactly_once(out: Path, n: int) -> None:
    ids = [r["custom_id"] for r in read_jsonl(out)]
    assert len(ids) == len(set(ids)) == n
    assert read_jsonl(out.with_name("out.errors.jsonl")) == []


def test_two_shards_end_exactly_once_and_record_the_sharding(ray_cluster, sim_factory, tmp_path: Path) -> None:
    sim = sim_factory(latency_s=0.01)
    job, out = _job(tmp_path, sim, 300)
    done = _run(ray_cluster, job, "--ray", ray_cluster.address, "--shards", "2", "-c", "16", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "ray: 2 shards on 2 nodes" in done.stderr
    _exactly_once(out, 300)
    billed = sim.ledger.billed_by_prompt()
    assert len(billed) == 300 and set(billed.values()) == {1}
    manifest = orjson.loads(out.with_name("out.manifest.json").read_bytes())
    assert manifest["sharding"] == {"hash": "blake2b-64(custom_id) mod shards", "shards": 2}

    # A resume must keep the shard count (refused before Ray is even joined), and a finished job
    # resumed with --ray sends nothing.
    other = _run(ray_cluster, job, "--ray", ray_cluster.address, "--shards", "1", "--no-progress")
    assert other.returncode == 2 and "--shards 2" in other.stderr, other.stderr
    again = _run(ray_cluster, job, "--ray", ray_cluster.address, "--no-progress")
    assert again.returncode == 0, again.stderr
    assert sim.ledger.counts()["billed"] == 300
