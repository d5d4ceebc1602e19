"""`status`, `report` and `show` read a real run's files and agree with the run and the simulator."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from conftest import (
    batchrun_cmd,
    cli_env,
    job_file,
    prompts,
    read_jsonl,
    run_cli,
    run_job,
    start_cli,
    write_jsonl,
)

from batchrun.config import output_paths
from batchrun.errors import IdNotFound
from batchrun.ledger import run_active
from batchrun.report import collect, write_report
from batchrun.runner import RunResult
from batchrun.show import show
from batchrun.sim import SimConfig, SimServer
from batchrun.status import job_status

# Faults that are turned away before generation, so every id is billed at most once and the
# token counts of the final records are exactly what the simulator billed.
# (No 429s: the pool's slow-down after one costs seconds and tests nothing here.)
FAULTS = {"500": 0.04, "502": 0.02, "moderation403": 0.05}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimServer, RunResult, Path]]:
    """A real run on the simulator with retries, content-filtered lines and two bad input lines."""
    tmp_path = tmp_path_factory.mktemp("run")
    sim = SimServer(SimConfig(faults=FAULTS, seed=11, latency_s=0.002, latency_jitter_s=0.01)).start()
    lines = [orjson.dumps(p) for p in prompts(200, max_tokens=24)]
    lines.insert(10, b"not json")
    lines.insert(20, b'{"custom_id": "p3", "prompt": "a duplicate id"}')
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\n[limits]\nmax_attempts = 3\n')
    try:
        result = run_job(job, api_key="sk-or-test")
        yield sim, result, tmp_path / "out.jsonl"
    finally:
        sim.stop()


def test_status_of_a_finished_run_matches_the_run_and_the_simulator_ledger(finished_run) -> None:
    sim, result, output = finished_run
    run = result.summary.to_dict()

    status = job_status(output)
    seen = status.summary.to_dict()

    assert result.exit_code == 1
    for key in ("succeeded", "failed", "prompt_tokens", "completion_tokens", "attempts", "retries",
                "cost_unknown", "latency_s"):
        assert seen[key] == run[key], key
    assert seen["cost_usd"] == pytest.approx(run["cost_usd"], abs=1e-9)
    assert seen["failed"]["invalid_input"] == 2 and seen["failed"]["content_filtered"] > 0
    assert job_status(output, check_input=False).summary.to_dict()["succeeded"] == run["succeeded"]
    # ... and the simulator's own ledger.
    billed = [e for e in sim.ledger.entries() if e.billed]
    assert max(sim.ledger.billed_by_prompt().values()) == 1
    assert seen["cost_usd"] == pytest.approx(sim.ledger.billed_total_usd(), abs=1e-9)
    assert seen["prompt_tokens"] == sum(e.prompt_tokens for e in billed)
    assert seen["completion_tokens"] == sum(e.completion_tokens for e in billed)
    assert seen["succeeded"] == len(billed) == len(read_jsonl(output))
    # What only the files, the lock and the manifest tell.
    assert status.active is False
    assert status.total_lines == 202 and status.finished == 202 and status.remaining == 0
    assert status.eta_s is None
    assert status.recent == 202 and status.rate_per_s > 0
    text = "\n".join(status.lines())
    assert "\n".join(result.summary.lines()[:3]) in text  # the run's own figures, line for line
    assert "run not running" in text and "progress 202 of 202 lines" in text


def test_status_cli_json_and_watch_until_ctrl_c(finished_run) -> None:
    _, result, output = finished_run

    shown = run_cli("status", output, "--json")
    watch = subprocess.Popen(batchrun_cmd("status", output, "--watch", "0.2"), env=cli_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert watch.stdout is not None
    seen = ""
    while seen.count("succeeded ") < 2:  # wait for two redraws, however slow the machine
        line = watch.stdout.readline()
        assert line, "status --watch ended before redrawing"
        seen += line
    watch.send_signal(signal.SIGINT)
    out, err = watch.communicate(timeout=10)
    out = seen + out

    assert shown.returncode == 0, shown.stderr
    data = orjson.loads(shown.stdout)
    assert data["succeeded"] == result.summary.succeeded
    assert data["cost_usd"] == pytest.approx(result.summary.cost_usd, abs=1e-9)
    assert data["active"] is False and data["total_lines"] == 202
    assert watch.returncode == 0, err
    assert out.count("succeeded ") >= 2, "the watch redraws"
    assert "Traceback" not in err


def test_status_sees_a_running_job_its_rate_and_eta(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(latency_s=0.05)
    source = write_jsonl(tmp_path / "in.jsonl", prompts(60))
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\n[limits]\nconcurrency = 2\n')
    output = tmp_path / "out.jsonl"
    process = start_cli("run", job, "--no-progress", output=False)
    try:
        deadline = time.monotonic() + 10
        while len(read_jsonl(output)) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        during = job_status(output)
    finally:
        process.wait(timeout=30)
    after = job_status(output)

    assert during.active is True
    assert 5 <= during.finished < 60
    assert during.rate_per_s > 0 and during.eta_s is not None and during.eta_s > 0
    assert "run running" in "\n".join(during.lines()) and "ETA" in "\n".join(during.lines())
    assert process.returncode == 0
    assert after.active is False and after.finished == 60 and after.eta_s is None


def test_a_dead_runs_lock_is_not_an_active_run(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    write_jsonl(output, [])
    lock = output_paths(output)["lock"]
    assert run_active(output) is False  # no lock file at all
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock.write_text(str(gone.pid))
    assert run_active(output) is False


def test_report_is_one_self_contained_html_file_with_the_plots(finished_run, tmp_path: Path) -> None:
    _, result, output = finished_run
    destination = tmp_path / "report.html"

    written = run_cli("report", output, "-o", destination)

    assert written.returncode == 0, written.stderr
    page = destination.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 6  # one per panel; the tokens panel draws two histograms
    for title in ("Requests completed over time", "Cumulative cost", "Latency of successful requests",
                  "Errors by kind over time", "Tokens per request", "Attempts per request"):
        assert title in page
    summary = result.summary
    assert f"{summary.succeeded:,}" in page and f"${summary.cost_usd:.6f}" in page
    p50 = summary.latency_percentiles()["p50"]
    assert f"p50 {p50:.3f} s" in page
    assert "content_filtered" in page and "invalid_input" in page
    assert page.count("<rect") > 10 and "<polyline" in page
    # Nothing to fetch: no scripts, stylesheets, images or fonts from anywhere.
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page, re.I)
    assert not re.search(r"https?://", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert len(page) < 200_000

    data = collect(output)
    assert sum(data.attempts.values()) == summary.finished - summary.failed["invalid_input"]
    assert len(data.latency) == summary.succeeded


def test_report_of_an_output_with_nothing_yet(tmp_path: Path) -> None:
    output = write_jsonl(tmp_path / "out.jsonl", [])
    page = write_report(output).read_text()
    assert "No finished requests yet." in page and page.count("<svg") == 6


def test_show_prints_the_final_record_and_the_request_sent(finished_run) -> None:
    _, _, output = finished_run
    results = read_jsonl(output)
    errors = {e["error"]["code"]: e for e in read_jsonl(output_paths(output)["errors"])}
    success = results[0]

    ok = show(output, success["custom_id"])
    filtered = show(output, errors["content_filtered"]["custom_id"])
    bad = show(output, errors["invalid_input"]["custom_id"])

    text = "\n".join(ok.lines())
    content = success["response"]["body"]["choices"][0]["message"]["content"]
    assert ok.source == "results" and ok.request is not None
    assert ok.request["messages"][-1]["content"].startswith("Say something about item")
    assert ok.request["max_tokens"] == 24
    assert content.splitlines()[0] in text
    assert f"attempts {success['attempts']}" in text
    assert f"${success['usage']['cost_usd']:.9f}" in text
    failed_text = "\n".join(filtered.lines())
    assert filtered.source == "errors" and "failed: content_filtered" in failed_text
    assert "last HTTP status 403" in failed_text and filtered.request is not None
    assert bad.request is None and bad.request_note is not None and "not sent" in bad.request_note
    with pytest.raises(IdNotFound):
        show(output, "no-such-id")


def test_show_cli_exits_1_with_one_line_for_an_unknown_id(finished_run) -> None:
    _, _, output = finished_run

    missing = run_cli("show", output, "no-such-id")
    found = run_cli("show", output, "p0", "--json")

    assert missing.returncode == 1
    assert missing.stdout == "" and missing.stderr.count("\n") == 1 and "no-such-id" in missing.stderr
    assert found.returncode == 0, found.stderr
    data = orjson.loads(found.stdout)
    assert data["record"]["custom_id"] == "p0" and data["input_line"] == 1
