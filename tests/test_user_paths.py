"""What a user meets on the sync path (issues 10 and 12): the job's budget, the output that is
never the input, a host that cannot be reached, pauses said aloud, summaries that add up, the
plan line, and exit 1 (not 3) when every line ran. Real CLI processes against the simulator."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import (
    StderrWatch,
    cli_env,
    job_file,
    line_count,
    prompts,
    read_jsonl,
    run_cli,
    start_cli,
    wait_for,
    write_jsonl,
)

import batchrun
from batchrun.events import Event, Finished


def _billed(*paths: Path) -> float:
    return sum(record.get("billed_usd") or 0.0 for path in paths for record in read_jsonl(path))


def test_max_cost_is_the_jobs_budget_across_reruns(tmp_path: Path, sim) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(400, max_tokens=64))
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"')
    runs = [run_cli("run", job, "--no-progress", "--max-cost", "0.0005") for _ in range(3)]

    assert [r.returncode for r in runs] == [3, 3, 3], runs[-1].stderr
    billed = _billed(tmp_path / "out.jsonl", tmp_path / "out.errors.jsonl")
    assert billed <= 0.0005
    assert sim.ledger.billed_total_usd() <= 0.0005 + 1e-12
    assert abs(billed - sim.ledger.billed_total_usd()) < 1e-9
    assert "budget $0.0005 for the job, $0.000" in runs[1].stderr  # what is left, said up front
    assert "runs before included" in runs[2].stderr
    more = run_cli("run", job, "--no-progress", "--max-cost", "1")
    assert more.returncode == 0, more.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 400


def test_the_output_is_never_the_input(tmp_path: Path, sim) -> None:
    source = write_jsonl(tmp_path / "same.jsonl", prompts(20))
    before = source.read_bytes()
    for extra in ((), ("--force",)):
        refused = run_cli("run", source, "-o", source, "--base-url", sim.base_url, *extra)
        assert refused.returncode == 2, refused.stderr
        assert "is the input file itself" in refused.stderr
        assert "--force" not in refused.stderr
    assert source.read_bytes() == before
    assert sim.ledger.counts()["requests"] == 0


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the with block ends


def test_a_host_that_cannot_be_reached_stops_the_job_resumable(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(20))
    url = f"http://127.0.0.1:{_closed_port()}/api/v1"
    completed = run_cli("run", source, "-o", tmp_path / "out.jsonl", "--base-url", url, "--no-progress",
                        env=cli_env(OPENROUTER_API_KEY="x"))

    assert completed.returncode == 3, completed.stderr
    assert "cannot reach 127.0.0.1:" in completed.stderr and "Traceback" not in completed.stderr
    assert read_jsonl(tmp_path / "out.errors.jsonl") == []  # no line burnt: a rerun sends them all
    assert "not run 20" in completed.stderr


def test_a_network_that_drops_midway_stops_the_job(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(latency_s=0.02)
    source = write_jsonl(tmp_path / "in.jsonl", prompts(3000))
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\n[limits]\nconcurrency = 8\n')
    process = start_cli("run", job, "--no-progress")
    watch = StderrWatch(process)
    wait_for(lambda: line_count(tmp_path / "out.jsonl") >= 100, what="100 records")
    sim.stop()
    stderr = watch.text()

    assert process.returncode == 3, stderr
    assert "cannot reach" in stderr
    errors = read_jsonl(tmp_path / "out.errors.jsonl")
    assert all(e["attempts"] < 6 for e in errors)  # none ran out of attempts against a dead host


def test_a_server_rate_limit_pause_is_said(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(rpm=600, rate_window_s=1.0)  # 10 requests in any second
    source = write_jsonl(tmp_path / "in.jsonl", prompts(30))
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\n[limits]\nconcurrency = 4\n')
    completed = run_cli("run", job)  # no terminal: log lines instead of a bar

    assert completed.returncode == 0, completed.stderr
    assert "the server's rate limit (429" in completed.stderr


def test_every_input_line_is_accounted_for_after_ctrl_c(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(latency_s=0.1)
    rows = prompts(400)
    rows[0]["prompt"] = "[[sim:moderation403]] " + rows[0]["prompt"]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\n[limits]\nconcurrency = 4\n')
    process = start_cli("run", job, "--no-progress")
    watch = StderrWatch(process)
    wait_for(lambda: line_count(tmp_path / "out.jsonl") >= 20, what="20 records")
    process.send_signal(signal.SIGINT)
    stderr = watch.text()
    assert process.returncode == 130, stderr
    done = line_count(tmp_path / "out.jsonl")
    assert f"succeeded {done:,}  failed 1  not run {400 - done - 1:,}" in stderr

    resumed = run_cli("run", job, "--no-progress")
    assert resumed.returncode == 1, resumed.stderr
    assert f"already done {done:,}  kept as failed 1" in resumed.stderr
    assert "1 id failed" in resumed.stderr and "--retry-failed" in resumed.stderr


def test_the_plan_prices_lines_that_bring_their_own_max_tokens(tmp_path: Path, sim) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(30, max_tokens=50))
    completed = run_cli("run", source, "-o", tmp_path / "out.jsonl", "--base-url", sim.base_url,
                        "--no-progress")
    assert completed.returncode == 0, completed.stderr
    plan = completed.stderr.splitlines()[0]
    assert "unknown" not in plan and "$0.0000 " not in plan
    assert "cost ~$0.000" in plan and "if every reply uses max_tokens (estimate" in plan


def test_one_line_of_an_unknown_model_is_exit_1_when_every_line_ran(tmp_path: Path, sim) -> None:
    rows: list[dict[str, Any]] = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "google/gemini-2.0-flash-lite-001", "max_tokens": 8,
                      "messages": [{"role": "user", "content": f"line {i}"}]}} for i in range(36)]
    rows[17]["body"]["model"] = "NonExistModel"
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    completed = run_cli("run", source, "-o", tmp_path / "out.jsonl", "--base-url", sim.base_url,
                        "--no-progress")

    assert completed.returncode == 1, completed.stderr
    assert "model NonExistModel is not available" in completed.stderr
    assert "1 line failed with model_unavailable" in completed.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 35


def test_a_stopped_run_returns_a_final_result_and_leaves_nothing_running(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(retry_after_s=2.0)
    rows = prompts(40)
    for row in rows[:24]:
        row["prompt"] = "[[sim:503*1]] " + row["prompt"]  # each waits 2 s for its retry
    rows[30]["prompt"] = "[[sim:auth401]] " + rows[30]["prompt"]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    events: list[Event] = []
    returned = False

    def on_event(event: Event) -> None:
        assert not returned, f"an event after run returned: {event}"
        events.append(event)

    async def main() -> tuple[dict[str, Any], dict[str, Any], int]:
        nonlocal returned
        result = await batchrun.run_async(source, output=tmp_path / "out.jsonl", base_url=sim.base_url,
                                          api_key="sk-or-test", concurrency=8, on_event=on_event)
        returned = True
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        at_return = orjson.loads(orjson.dumps(result.summary.to_dict()))
        await asyncio.sleep(2.5)  # past every retry's wait: were any of them still to fire
        later = orjson.loads(orjson.dumps(result.summary.to_dict()))
        assert result.exit_code == 3 and result.stop_kind == "auth_error"
        return at_return, later, len(left)

    at_return, later, left = asyncio.run(main())
    assert left == 0, "tasks of the run were left on the loop"
    assert at_return == later
    finished = sum(isinstance(e, Finished) for e in events)
    assert at_return["succeeded"] + sum(at_return["failed"].values()) == finished
    assert at_return["succeeded"] + sum(at_return["failed"].values()) + at_return["not_run"] == 40


def test_the_plan_says_why_lines_are_invalid(tmp_path: Path, sim) -> None:
    table = tmp_path / "rows.csv"
    table.write_text("id,text\na1,hello\na2,world\n")
    completed = run_cli("run", table, "-o", tmp_path / "out.jsonl", "--base-url", sim.base_url,
                        "--no-progress")
    plan = completed.stderr.splitlines()[0]
    assert "2 of the first 2 lines are invalid (rows need a template (--template" in plan
    assert "cost" not in plan


def test_show_prints_the_body_that_was_sent_to_another_server(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(dialect="plain")  # a llama.cpp/vLLM-like server: streams get usage only if asked
    source = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": "s1", "prompt": "hi", "stream": True,
                                                  "max_tokens": 8}])
    ran = run_cli("run", source, "-o", tmp_path / "out.jsonl", "--base-url", sim.base_url, "--no-progress")
    assert ran.returncode == 0, ran.stderr
    shown = run_cli("show", tmp_path / "out.jsonl", "s1", "--json")
    assert shown.returncode == 0, shown.stderr
    request = orjson.loads(shown.stdout)["request"]
    [sent] = [r for r in orjson.loads(_get_text(sim.root_url + "/_sim/requests"))["requests"]
              if r.get("path", "").endswith("/chat/completions")]
    assert request == sent["body"]
    assert request["stream_options"] == {"include_usage": True}


def _get_text(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as answer:
        return bytes(answer.read())


def test_status_says_the_wall_time_the_runs_took(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(latency_s=0.05)
    source = write_jsonl(tmp_path / "in.jsonl", prompts(40))
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\n[limits]\nconcurrency = 2\n')
    walls = []
    for limit in ("20", "40"):
        ran = run_cli("run", job, "--no-progress", "--limit", limit)
        assert ran.returncode == 0, ran.stderr
        walls.append(float(ran.stderr.split("wall time ")[1].split(" s")[0]))
    shown = run_cli("status", tmp_path / "out.jsonl", "--json")
    assert orjson.loads(shown.stdout)["wall_s"] == pytest.approx(sum(walls), abs=0.02)
