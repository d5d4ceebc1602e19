"""The whole pipeline against the real simulator over loopback: real files, real processes."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import orjson
import pytest
from conftest import (
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


def test_5000_lines_with_faults_end_with_5000_results_billed_as_the_simulator_says(
    tmp_path: Path, sim_factory
) -> None:
    sim = sim_factory(faults={"429": 0.02, "500": 0.01, "502": 0.005, "503": 0.005}, retry_after_s=0.02, seed=3)
    source = write_jsonl(tmp_path / "in.jsonl", prompts(5000))
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\n[limits]\nconcurrency = 64\n')

    result = run_job(job)

    results = read_jsonl(tmp_path / "out.jsonl")
    assert result.exit_code == 0, result.message
    assert len(results) == 5000
    assert {r["custom_id"] for r in results} == {f"p{i}" for i in range(5000)}
    assert read_jsonl(tmp_path / "out.errors.jsonl") == []
    counts = sim.ledger.counts()
    assert counts["rejections"], "the faults were injected"
    assert any(r["attempts"] > 1 for r in results)
    for record in results:
        entry = sim.ledger.by_gen_id(record["response"]["request_id"])
        assert entry is not None and entry.billed
        usage = record["usage"]
        assert usage["prompt_tokens"] == entry.prompt_tokens
        assert usage["completion_tokens"] == entry.completion_tokens
        assert usage["cost_usd"] == pytest.approx(entry.cost, abs=1e-12)
        assert usage["cost_source"] == "provider"
        assert record["model"] == "google/gemini-2.0-flash-lite-001"
        assert record["provider"] == "Google"
    assert sum(r["billed_usd"] for r in results) == pytest.approx(sim.ledger.billed_total_usd(), abs=1e-9)
    assert max(sim.ledger.billed_by_prompt().values()) == 1


def test_rerun_of_a_finished_job_sends_nothing(tmp_path: Path, sim) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(50))
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"')
    assert run_job(job).exit_code == 0
    billed = sim.ledger.counts()["requests"]

    again = run_job(job)

    assert again.exit_code == 0
    assert again.summary.already_done == 50
    assert sim.ledger.counts()["requests"] == billed
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 50


BAD_LINES = [
    b"this is not json",
    b"[1, 2, 3]",
    b"42",
    b'"a string"',
    b'{"custom_id": "no-body"}',
    b'{"custom_id": "bad-messages", "messages": "hello"}',
    b'{"custom_id": "bad-prompt", "prompt": 7}',
    b'{"custom_id": "bad-max", "prompt": "hi", "max_tokens": "lots"}',
    b'{"custom_id": "good-1", "prompt": "a duplicate follows"}',
    b'{"custom_id": "bad-url", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}',
    b'{"custom_id": "bad-utf8", "prompt": "caf\xe9"}',
    b'{"id": {"x": 1}, "prompt": "x"}',
]


def test_each_bad_line_gives_one_invalid_input_record_and_good_lines_run(tmp_path: Path, sim) -> None:
    good = [orjson.dumps(p) for p in prompts(20, prefix="g")]
    lines = [*good[:10], *BAD_LINES, b'{"custom_id": "good-1", "prompt": "again"}', b"", b"   ", *good[10:]]
    lines.append(orjson.dumps({"custom_id": "huge", "prompt": "x" * 1_000_000, "max_tokens": 4}))
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\r\n".join(lines) + b"\n")
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"')

    result = run_job(job)

    errors = read_jsonl(tmp_path / "out.errors.jsonl")
    results = read_jsonl(tmp_path / "out.jsonl")
    assert result.exit_code == 1
    assert all(e["error"]["code"] == "invalid_input" for e in errors)
    bad_line_numbers = [11 + i for i in range(len(BAD_LINES)) if b"good-1" not in BAD_LINES[i]]
    bad_line_numbers.append(11 + len(BAD_LINES))  # the duplicate id
    assert sorted(e["error"]["line"] for e in errors) == bad_line_numbers
    assert {r["custom_id"] for r in results} == {f"g{i}" for i in range(20)} | {"good-1", "huge"}
    by_line = {e["error"]["line"]: e for e in errors}
    assert "not valid JSON" in by_line[11]["error"]["message"]
    assert "duplicate id 'good-1'" in by_line[11 + len(BAD_LINES)]["error"]["message"]
    assert "UTF-8" in by_line[21]["error"]["message"]
    assert "/v1/embeddings" in by_line[20]["error"]["message"]


def test_sigkill_midway_then_rerun_gives_exactly_one_result_per_id(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(latency_s=0.02, latency_jitter_s=0.03)
    n, concurrency = 3000, 32
    rows = prompts(n)
    flagged = {f"p{i}" for i in range(0, n, 97)}  # a per-line verdict that stays failing
    for row in rows:
        if row["custom_id"] in flagged:
            row["prompt"] = "[[sim:moderation403]] " + row["prompt"]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\n[limits]\nconcurrency = {concurrency}\n')
    output = tmp_path / "out.jsonl"
    kills = 0
    for written in (300, 900, 1600):  # kill each run once the output holds this many records
        process = start_cli("run", job, "--no-progress", output=False)
        def far_enough(run: subprocess.Popen[str] = process, at: int = written) -> bool:
            return line_count(output) >= at or run.poll() is not None

        wait_for(far_enough, what=f"{written} records")
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 2, "the job must be killed while it runs"
    assert output.exists() and 0 < len(read_jsonl(output)) < n

    final = run_cli("run", job, "--no-progress")

    assert final.returncode == 1, final.stderr
    ids = [r["custom_id"] for r in read_jsonl(output)]  # read_jsonl parses every line: none torn
    assert len(ids) == len(set(ids)) == n - len(flagged)
    errors = [e["custom_id"] for e in read_jsonl(tmp_path / "out.errors.jsonl")]
    assert sorted(errors) == sorted(flagged)
    assert set(ids) | set(errors) == {f"p{i}" for i in range(n)}
    paid = sim.ledger.billed_by_prompt()
    paid_twice = sum(count - 1 for count in paid.values())
    assert len(paid) == n - len(flagged)
    assert paid_twice <= kills * concurrency
    print(f"kill loop: {kills} kills, {n} lines, {paid_twice} paid twice (bound {kills * concurrency})")


def test_first_sigint_drains_in_flight_and_exits_130(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(latency_s=0.2)
    source = write_jsonl(tmp_path / "in.jsonl", prompts(400))
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\n[limits]\nconcurrency = 8\n')
    process = start_cli("run", job, "--no-progress")
    wait_for(lambda: line_count(tmp_path / "out.jsonl") >= 20, what="20 records")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    written = read_jsonl(tmp_path / "out.jsonl")
    assert 0 < len(written) < 400
    # Every request the simulator answered was written: draining lost nothing in flight.
    assert sim.ledger.counts()["billed"] == len(written)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.jsonl"], "input file not found"),
        (["run", "in.jsonl", "--concurrency", "0"], "concurrency must be a whole number >= 1"),
        (["run", "in.jsonl", "--bogus"], "No such option"),
        (["run", "in.jsonl", "-p", "novalue"], "-p needs key=value"),
        (["run", "in.jsonl", "--base-url", "ftp://x"], "base_url must start with http"),
        (["run", "bad.toml"], "not valid TOML"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(2))
    (tmp_path / "bad.toml").write_text("input = \n")
    completed = subprocess.run(batchrun_cmd(*args), cwd=tmp_path, capture_output=True, text=True,
                               env=cli_env(), timeout=60)
    assert completed.returncode == 2
    assert message in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1, completed.stderr
    assert "Traceback" not in completed.stderr


def test_no_key_against_openrouter_is_exit_2_before_any_request(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    env = cli_env()
    del env["OPENROUTER_API_KEY"]
    completed = run_cli("run", source, env=env)
    assert completed.returncode == 2
    assert "set OPENROUTER_API_KEY" in completed.stderr


def test_bad_key_stops_the_job_fast_with_exit_3(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(api_keys=frozenset({"sk-or-right"}))
    source = write_jsonl(tmp_path / "in.jsonl", prompts(500))
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\n[limits]\nconcurrency = 8\n')

    completed = run_cli("run", job, "--no-progress", env=cli_env(OPENROUTER_API_KEY="sk-or-wrong"))

    assert completed.returncode == 3, completed.stderr
    assert "set OPENROUTER_API_KEY" in completed.stderr
    assert sim.ledger.counts()["requests"] <= 8 + 1
    errors = tmp_path / "out.errors.jsonl"  # none: no line failed, the job stopped before any
    assert "sk-or-wrong" not in completed.stderr + (errors.read_text() if errors.exists() else "")


def test_unknown_model_stops_naming_the_fallbacks(tmp_path: Path, sim) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(300))
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\nmodel = "google/gemini-1.5-flash"')

    completed = run_cli("run", job, "--no-progress")

    assert completed.returncode == 3, completed.stderr
    assert "google/gemini-1.5-flash is not available: choose another with --model" in completed.stderr
    assert "google/gemini-2.0-flash-lite-001" in completed.stderr
    assert sim.ledger.counts()["requests"] <= 16 + 1

    rerun = run_cli("run", job, "--no-progress", "--model", "google/gemini-2.0-flash-lite-001")
    assert rerun.returncode == 0, rerun.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 300
    assert read_jsonl(tmp_path / "out.errors.jsonl") == []


def test_an_unavailable_model_stops_only_its_own_lines(tmp_path: Path, sim) -> None:
    rows = prompts(60)
    for row in rows[::3]:
        row["model"] = "google/gemini-1.5-flash"
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", rows), extra=f'base_url = "{sim.base_url}"')

    result = run_job(job)

    assert result.exit_code == 3 and result.stop_kind == "model_unavailable"
    assert "google/gemini-1.5-flash is not available" in result.message
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 40
    errors = read_jsonl(tmp_path / "out.errors.jsonl")
    assert errors and all(e["error"]["code"] == "model_unavailable" for e in errors)
    assert len(errors) + result.summary.not_run >= 20


def test_an_unwritable_output_folder_is_exit_2_before_any_request(tmp_path: Path, sim) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    (tmp_path / "file").write_text("a regular file")
    completed = run_cli("run", source, "-o", tmp_path / "file" / "out.jsonl", "--base-url", sim.base_url)
    assert completed.returncode == 2
    assert "cannot create the output folder" in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1
    assert sim.ledger.counts()["requests"] == 0


def test_sim_flag_runs_the_sample_job_end_to_end(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    output = tmp_path / "labels.jsonl"
    completed = run_cli("run", repo / "jobs" / "label-reviews.toml", "--sim", "-o", output, "--limit", "40")
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr.startswith("batchrun: 40 lines from reviews.jsonl")
    records = read_jsonl(output)
    assert len(records) == 40
    assert {r["response"]["body"]["choices"][0]["message"]["content"] for r in records} <= {
        "positive", "negative", "neutral"
    }
    assert all(r["metadata"]["product"] for r in records)


def test_torn_last_line_is_repaired_on_resume(tmp_path: Path, sim) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(30))
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"')
    assert run_job(job, limit=20).exit_code == 0
    output = tmp_path / "out.jsonl"
    data = output.read_bytes()
    output.write_bytes(data[: len(data) - 40])  # the last line loses its end

    result = run_job(job)

    ids = [r["custom_id"] for r in read_jsonl(output)]
    assert result.exit_code == 0
    assert sorted(ids) == sorted(f"p{i}" for i in range(30))
    assert os.path.getsize(output) > 0


def test_integers_beyond_64_bits_go_out_and_come_back_exactly(tmp_path: Path, sim) -> None:
    big = 123456789012345678901234567890
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"custom_id": "big", "prompt": "hi", "max_tokens": 4, "metadata": {"n": %d}}\n' % big)
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"')
    assert run_job(job).exit_code == 0
    line = (tmp_path / "out.jsonl").read_bytes()
    assert b'"n": %d' % big in line or b'"n":%d' % big in line
    assert orjson.loads(line)["response"]["body"]["choices"]
