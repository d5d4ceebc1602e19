"""Promises a user leaves running overnight depend on, each attacked through a real process or the
real runner against the simulator over loopback."""

from __future__ import annotations

import asyncio
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    StderrWatch,
    batchrun_cmd,
    cli_env,
    job_file,
    line_count,
    prompts,
    read_jsonl,
    run_cli,
    run_job,
    start_cli,
    wait_for,
    write_jsonl,
)

from batchrun.ledger import run_active

RETRIED = {
    "429": "rate_limited",
    "500": "server_error",
    "502": "server_error",
    "503": "server_error",
    "504": "server_error",
    "524": "server_error",
    "html502": "server_error",
    "error200": "provider_error",
    "finish_error": "provider_error",
    "empty_choices": "provider_error",
    "drop": "connection_error",
    "torn": "connection_error",
    "hang": "timeout",
    "inflight402": "rate_limited",
}


def test_every_transient_fault_is_classified_and_retried_until_it_succeeds(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(retry_after_s=0.01, hang_s=30)
    rows = [
        {"custom_id": fault, "prompt": f"[[sim:{fault}*2]] tell me about {fault}", "max_tokens": 8}
        for fault in RETRIED
    ]
    rows.append({"custom_id": "whitespace", "prompt": "[[sim:whitespace]] hi", "max_tokens": 8})
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    log = tmp_path / "attempts.log"
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\n[limits]\ntimeout_s = 0.5\n')

    result = run_job(job, {"log_path": log}, api_key="sk-or-test")

    assert result.exit_code == 0, result.message
    results = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert set(results) == set(RETRIED) | {"whitespace"}
    assert results["whitespace"]["attempts"] == 1
    attempts = read_jsonl(log)
    for fault, kind in RETRIED.items():
        assert results[fault]["attempts"] == 3, fault
        kinds = [a["kind"] for a in attempts if a["custom_id"] == fault]
        assert kinds == [kind, kind, None], fault
    waits = [a for a in attempts if a["custom_id"] == "429" and a["outcome"] == "retry"]
    assert all(a["wait_s"] == pytest.approx(0.01) and "server asked" in a["wait_reason"] for a in waits)


def test_an_id_that_exhausts_its_attempts_goes_to_the_errors_file_with_the_last_status(
    tmp_path: Path, sim_factory
) -> None:
    sim = sim_factory()
    rows = [*prompts(10), {"custom_id": "doomed", "prompt": "[[sim:503]] no luck", "max_tokens": 8}]
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", rows), extra=f'base_url = "{sim.base_url}"')

    result = run_job(job, {"max_attempts": 3}, api_key="k")

    assert result.exit_code == 1
    [error] = read_jsonl(tmp_path / "out.errors.jsonl")
    assert error["custom_id"] == "doomed"
    assert error["error"]["code"] == "server_error" and error["error"]["status"] == 503
    assert error["response"]["status_code"] == 503 and error["response"]["body"]["error"]["code"] == 503
    assert error["attempts"] == 3
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 10


def test_moderation_flags_only_its_line_and_credits_stop_the_job(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory()
    rows = [*prompts(20), {"custom_id": "flagged", "prompt": "[[sim:moderation403]] hmm", "max_tokens": 8}]
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", rows), extra=f'base_url = "{sim.base_url}"')
    result = run_job(job, api_key="k")
    assert result.exit_code == 1
    [error] = read_jsonl(tmp_path / "out.errors.jsonl")
    assert error["error"]["code"] == "content_filtered"
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 20

    broke = sim_factory(credits_usd=0.0)
    job2 = job_file(tmp_path, write_jsonl(tmp_path / "in2.jsonl", prompts(300)),
                    output=tmp_path / "broke.jsonl",
                    extra=f'base_url = "{broke.base_url}"\n[limits]\nconcurrency = 4\n')
    stopped = run_cli("run", job2, "--no-progress")
    assert stopped.returncode == 3, stopped.stderr
    assert "out of credits" in stopped.stderr
    assert broke.ledger.counts()["requests"] <= 4 + 1


def test_budget_cap_is_never_passed_and_the_job_resumes_after_raising_it(tmp_path: Path, sim) -> None:
    rows = prompts(400, max_tokens=50)
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", rows), extra=f'base_url = "{sim.base_url}"')
    cap = 0.001
    result = run_job(job, {"max_cost_usd": cap}, api_key="k")

    assert result.exit_code == 3 and result.stop_kind == "budget_exceeded"
    assert "raise --max-cost" in result.message
    assert 0 < sim.ledger.billed_total_usd() <= cap
    done = len(read_jsonl(tmp_path / "out.jsonl"))
    assert 0 < done < 400

    again = run_job(job, {"max_cost_usd": 1.0}, api_key="k")
    assert again.exit_code == 0
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 400
    assert max(sim.ledger.billed_by_prompt().values()) == 1


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_stops_cleanly_with_exit_3_and_the_job_resumes(tmp_path: Path, sim) -> None:
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", prompts(500)), extra=f'base_url = "{sim.base_url}"')
    full = subprocess.run(batchrun_cmd("run", job, "--no-progress"), env=cli_env(), capture_output=True,
                          text=True, timeout=120, preexec_fn=_limit_file_size(200_000))
    assert full.returncode == 3, full.stderr
    assert "cannot write the output" in full.stderr and "run again to resume" in full.stderr
    assert "Traceback" not in full.stderr

    rerun = run_cli("run", job, "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    ids = [r["custom_id"] for r in read_jsonl(tmp_path / "out.jsonl")]
    assert len(ids) == 500 and len(set(ids)) == 500


def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(latency_s=0.3)
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", prompts(200)),
                   extra=f'base_url = "{sim.base_url}"\n[limits]\nconcurrency = 4\n')
    first = start_cli("run", job, "--no-progress", output=False)
    try:
        wait_for(lambda: run_active(tmp_path / "out.jsonl") is True, what="the first run's lock")
        second = run_cli("run", job, "--no-progress")
        assert second.returncode == 2
        assert "another batchrun run (pid" in second.stderr
    finally:
        first.kill()
        first.wait()
    after_kill = run_cli("run", job, "--no-progress", "--concurrency", "64")  # the lock died with it
    assert after_kill.returncode == 0, after_kill.stderr


def test_resuming_with_other_parameters_is_refused_unless_forced(tmp_path: Path, sim) -> None:
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", prompts(5)), extra=f'base_url = "{sim.base_url}"')
    assert run_cli("run", job, "-p", "temperature=0", "--no-progress").returncode == 0
    refused = run_cli("run", job, "-p", "temperature=1", "--no-progress")
    assert refused.returncode == 2
    assert "different request params" in refused.stderr and "--force" in refused.stderr
    changed_limits = run_cli("run", job, "-p", "temperature=0", "--concurrency", "3", "--no-progress")
    assert changed_limits.returncode == 0
    forced = run_cli("run", job, "-p", "temperature=1", "--force", "--no-progress")
    assert forced.returncode == 0


def test_sigterm_drains_and_exits_143(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(latency_s=0.2)
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", prompts(400)),
                   extra=f'base_url = "{sim.base_url}"\n[limits]\nconcurrency = 8\n')
    process = start_cli("run", job, "--no-progress")
    wait_for(lambda: line_count(tmp_path / "out.jsonl") >= 16, what="16 records")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 143, stderr
    assert sim.ledger.counts()["billed"] == len(read_jsonl(tmp_path / "out.jsonl"))


def test_a_second_ctrl_c_quits_at_once(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(latency_s=30)
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", prompts(50)),
                   extra=f'base_url = "{sim.base_url}"\n[limits]\nconcurrency = 4\n')
    process = start_cli("run", job, "--no-progress")
    watch = StderrWatch(process)
    wait_for(lambda: sim.ledger.counts()["generations"] >= 4, what="4 requests in flight")
    process.send_signal(signal.SIGINT)
    wait_for(lambda: watch.has("stopping:"), what="the first Ctrl-C's notice")
    assert process.poll() is None, "the first Ctrl-C waits for requests in flight"
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    process.wait(timeout=10)
    assert time.monotonic() - started < 5
    assert process.returncode == 130
    assert "quitting now" in watch.text()


def test_the_key_is_never_written_anywhere(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(faults={"500": 0.2, "429": 0.1}, retry_after_s=0.01)
    secret = "sk-or-v1-0123456789abcdef-secret"
    log = tmp_path / "attempts.log"
    rows = [*prompts(40), {"custom_id": "bad", "prompt": 5}]
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", rows), extra=f'base_url = "{sim.base_url}"')
    completed = run_cli("run", job, "--no-progress", "--log", log, env=cli_env(OPENROUTER_API_KEY=secret))
    assert completed.returncode == 1
    written = [completed.stdout, completed.stderr] + [p.read_text() for p in tmp_path.iterdir() if p.is_file()]
    assert not any(secret in text or "Bearer" in text for text in written)


def test_a_budget_without_max_tokens_is_refused_before_any_request(tmp_path: Path, sim) -> None:
    rows = [{"custom_id": f"n{i}", "prompt": "no cap on the reply"} for i in range(5)]
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", rows), extra=f'base_url = "{sim.base_url}"')
    refused = run_cli("run", job, "--max-cost", "1", "--no-progress")
    assert refused.returncode == 2
    assert "needs every request to have max_tokens" in refused.stderr
    assert sim.ledger.counts()["requests"] == 0


def test_the_key_is_redacted_when_a_server_echoes_it_back(tmp_path: Path) -> None:
    from aiohttp import web

    async def echo(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        return web.json_response({"error": {"code": 400, "message": f"bad request, you sent {header}"}},
                                 status=400)

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        secret = "sk-or-v1-echo-me-back-0123456789"
        source = write_jsonl(tmp_path / "in.jsonl", prompts(3))
        proc = await asyncio.create_subprocess_exec(
            *batchrun_cmd("run", source, "-o", tmp_path / "out.jsonl", "--base-url",
                          f"http://127.0.0.1:{port}/v1", "--log", tmp_path / "log.jsonl", "--no-progress",
                          "--api-key-env", "ECHO_SERVER_KEY"),
            env=cli_env(ECHO_SERVER_KEY=secret), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate()
        await runner.cleanup()
        assert proc.returncode == 1, err
        texts = [out.decode(), err.decode()] + [p.read_text() for p in tmp_path.iterdir() if p.is_file()]
        assert all(secret not in text for text in texts)
        assert "[redacted]" in (tmp_path / "out.errors.jsonl").read_text()

    asyncio.run(serve())


def test_the_budget_books_the_dearest_model_of_a_fallback_list(tmp_path: Path, sim) -> None:
    # gemini-2.0-flash-lite is cheap; claude-3.5-haiku, a fallback, costs ~13x more per token.
    rows = [{**row, "models": ["google/gemini-2.0-flash-lite-001", "anthropic/claude-3.5-haiku"]}
            for row in prompts(50, max_tokens=50)]
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", rows), extra=f'base_url = "{sim.base_url}"')
    cap = 0.001
    result = run_job(job, {"max_cost_usd": cap, "concurrency": 4}, api_key="k")
    assert result.stop_kind == "budget_exceeded"
    # Each request could cost up to 50 output tokens at $4/M, so few fit under the cap.
    per_request_worst = 50 * 4.0e-6
    assert len(read_jsonl(tmp_path / "out.jsonl")) <= cap / per_request_worst
    assert sim.ledger.billed_total_usd() <= cap
