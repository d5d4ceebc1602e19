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
from conftest import batchrun_cmd, cli_env, job_file, prompts, read_jsonl, write_jsonl
from counting_server import CountingSim
from ray_harness import RayCluster, ray_cluster_fixture  # noqa: F401 - the fixture ray_cluster

pytest.importorskip("ray.exceptions")  # the bare name would find this folder (a namespace package)

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]


def _env(cluster: RayCluster) -> dict[str, str]:
    return cli_env(**cluster.env)


def _run(cluster: RayCluster, *args: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(batchrun_cmd("run", *args), capture_output=True, text=True, timeout=timeout,
                          env=_env(cluster))


def _start(cluster: RayCluster, *args: str | Path, log: Path) -> subprocess.Popen[bytes]:
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


def _kill_when(cluster: RayCluster, proc: subprocess.Popen[bytes], out: Path, lines: int, log: Path) -> None:
    _wait(lambda: _lines(out) >= lines or proc.poll() is not None, f"{lines} results")
    assert proc.poll() is None, log.read_text()


def test_a_killed_shard_is_restarted_and_repays_at_most_its_in_flight(ray_cluster, sim_factory, tmp_path: Path) -> None:
    n, concurrency = 2000, 16
    sim = sim_factory(latency_s=0.05)
    job, out = _job(tmp_path, sim, n)
    log = tmp_path / "run.log"
    proc = _start(ray_cluster, job, "--ray", ray_cluster.address, "--shards", "2", "-c", str(concurrency), log=log)
    _kill_when(ray_cluster, proc, out, 300, log)
    shards = ray_cluster.worker_pids("ray::Shard")
    assert len(shards) == 2, shards
    os.kill(shards[0], signal.SIGKILL)
    assert proc.wait(180) == 0, log.read_text()
    assert "died (" in log.read_text() and "starting it again" in log.read_text()
    _exactly_once(out, n)
    repaid = sim.ledger.counts()["billed"] - n
    print(f"shard kill: re-paid {repaid} (bound {concurrency // 2})")
    assert 0 <= repaid <= concurrency // 2, repaid  # that shard's share of the window

    again = _run(ray_cluster, job, "--ray", ray_cluster.address, "--no-progress")
    assert again.returncode == 0, again.stderr
    assert sim.ledger.counts()["billed"] == n + repaid


def test_a_killed_driver_repays_at_most_what_was_in_flight_and_resumes_without_ray(
    ray_cluster, sim_factory, tmp_path: Path
) -> None:
    n, concurrency = 2000, 16
    sim = sim_factory(latency_s=0.05)
    job, out = _job(tmp_path, sim, n)
    log = tmp_path / "run.log"
    proc = _start(ray_cluster, job, "--ray", ray_cluster.address, "--shards", "2", "-c", str(concurrency), log=log)
    _kill_when(ray_cluster, proc, out, 300, log)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    # The shards outlive their driver by about a second; whatever they send then is re-paid.
    _wait(lambda: not ray_cluster.worker_pids("ray::Shard"), "the shards to die with their driver")
    assert 300 <= _lines(out) < n

    rerun = subprocess.run(batchrun_cmd("run", job, "--no-progress"), capture_output=True, text=True,
                           timeout=180, env=_env(ray_cluster))
    assert rerun.returncode == 0, rerun.stderr
    _exactly_once(out, n)
    repaid = sim.ledger.counts()["billed"] - n
    print(f"driver kill: re-paid {repaid} (bound {concurrency})")
    assert 0 <= repaid <= concurrency, repaid


def test_rpm_holds_across_shards_with_no_429(ray_cluster, sim_factory, tmp_path: Path) -> None:
    # The simulator refuses the 41st request in any 1 s window (2,400 a minute, counted per
    # second); two shards that each kept the whole rate would send 78 a second.
    sim = sim_factory(latency_s=0.01, rpm=2400, rate_window_s=1.0)
    job, out = _job(tmp_path, sim, 200)
    done = _run(ray_cluster, job, "--ray", ray_cluster.address, "--shards", "2", "--rpm", "2400",
                "-c", "16", "--no-progress")
    assert done.returncode == 0, done.stderr
    _exactly_once(out, 200)
    counts = sim.ledger.counts()
    assert counts["rate_limited"] == 0 and "429" not in counts["rejections"], counts
    assert sim.ledger.max_accepted_in_window(1.0) <= 40


def test_max_cost_is_never_passed_across_shards_nor_across_runs(ray_cluster, sim_factory, tmp_path: Path) -> None:
    budget = 0.0005  # about 150 of these requests at their real price, 40 at their worst case
    sim = sim_factory(latency_s=0.01)
    job, out = _job(tmp_path, sim, 400)
    first = _run(ray_cluster, job, "--ray", ray_cluster.address, "--shards", "2", "--max-cost", str(budget),
                 "-c", "16", "--no-progress")
    assert first.returncode == 3, first.stderr
    assert "budget reached" in first.stderr
    spent = sim.ledger.billed_total_usd()
    assert budget / 2 <= spent <= budget, spent
    ran = len(read_jsonl(out))
    assert 0 < ran < 400

    second = _run(ray_cluster, job, "--ray", ray_cluster.address, "--max-cost", str(budget), "--no-progress")
    assert second.returncode == 3, second.stderr
    assert sim.ledger.billed_total_usd() <= budget


def test_concurrency_is_never_passed_in_total(ray_cluster, tmp_path: Path) -> None:
    concurrency = 6
    with CountingSim(latency_s=0.05) as sim:
        job, out = _job(tmp_path, sim, 240)
        done = _run(ray_cluster, job, "--ray", ray_cluster.address, "--shards", "2",
                    "-c", str(concurrency), "--no-progress")
        assert done.returncode == 0, done.stderr
        _exactly_once(out, 240)
        # Both shards sent at once (more than one shard's share), never more than the job's total.
        assert concurrency // 2 < sim.max_in_flight <= concurrency, sim.max_in_flight
