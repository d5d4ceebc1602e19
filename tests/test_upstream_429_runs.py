"""Sparse upstream 429s, in every header style OpenRouter sends, never slow the whole pool."""

from __future__ import annotations

from pathlib import Path

import orjson
from conftest import job_file, prompts, read_jsonl, run_cli, run_job, write_jsonl

from batchrun.events import Event, Notice

# Far above what the simulator can answer: never binding, but with a rate set every pool-wide
# slow-down announces itself ("slowed to N requests/min", or "paused N s" for a long pause).
_RPM = 600_000


def _slowdowns(notices: list[str]) -> list[str]:
    return [text for text in notices if "slowed to" in text or "paused" in text]


def test_two_percent_upstream_429s_in_the_header_mix_leave_the_pool_alone(
    tmp_path: Path, sim_factory
) -> None:
    sim = sim_factory(faults={"429": 0.02}, upstream_429_headers="mix", retry_after_s=0.05,
                      latency_s=0.002, seed=5)
    source = write_jsonl(tmp_path / "in.jsonl", prompts(1500))
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\n'
                   f"[limits]\nconcurrency = 32\nrpm = {_RPM}\n")
    events: list[Event] = []

    result = run_job(job, api_key="sk-or-test", on_event=events.append)

    assert result.exit_code == 0, result.message
    results = read_jsonl(tmp_path / "out.jsonl")
    assert {r["custom_id"] for r in results} == {f"p{i}" for i in range(1500)}
    limited = sim.ledger.counts()["faults"].get("429", 0)
    assert limited >= 15, "the 429s were injected"
    assert sum(r["attempts"] - 1 for r in results) == limited
    # Every one named its upstream provider, a third with X-RateLimit-Remaining: 0 in the headers
    # and a third in error.metadata.headers: none is the client's own limit.
    assert _slowdowns([e.message for e in events if isinstance(e, Notice)]) == []


def test_the_log_shows_each_429_waited_its_own_retry_after(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(faults={"429": 0.02}, upstream_429_headers="mix", retry_after_s=0.05, seed=9)
    source = write_jsonl(tmp_path / "in.jsonl", prompts(600))
    log = tmp_path / "trace.jsonl"
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\n'
                   f"[limits]\nconcurrency = 16\nrpm = {_RPM}\n")

    done = run_cli("run", job, "--log", log)  # not --no-progress: that hides the notices

    assert done.returncode == 0, done.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 600
    assert _slowdowns(done.stderr.splitlines()) == []
    retries = [line for line in map(orjson.loads, log.read_bytes().splitlines()) if line["outcome"] == "retry"]
    assert len(retries) == sim.ledger.counts()["faults"].get("429", 0) >= 3
    for line in retries:
        assert (line["status"], line["kind"], line["wait_s"]) == (429, "rate_limited", 0.05)
        assert line["wait_reason"].startswith("server asked")
