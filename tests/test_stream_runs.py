"""``stream: true`` through the real runner: SSE assembled into one body, mid-stream errors retried."""

from __future__ import annotations

from pathlib import Path

from conftest import job_file, read_jsonl, run_job, write_jsonl


def test_streamed_replies_are_assembled_and_billed_like_the_simulator_says(tmp_path: Path, sim) -> None:
    rows = [
        {"custom_id": f"s{i}", "prompt": f"Tell me about item {i}.", "max_tokens": 32, "stream": True}
        for i in range(10)
    ]
    rows.append({"custom_id": "cut", "prompt": "[[sim:finish_error*1]] again", "max_tokens": 16, "stream": True})
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", rows), extra=f'base_url = "{sim.base_url}"')

    result = run_job(job, api_key="k")

    assert result.exit_code == 0, result.message
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert len(records) == 11
    assert records["cut"]["attempts"] == 2
    for record in records.values():
        body = record["response"]["body"]
        assert body["choices"][0]["message"]["content"]
        entry = sim.ledger.by_gen_id(record["response"]["request_id"])
        assert entry is not None and entry.streamed
        assert record["usage"]["completion_tokens"] == entry.completion_tokens
        assert record["usage"]["cost_usd"] == entry.cost


def test_time_to_first_token_is_recorded_for_streams_and_null_otherwise(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(latency_s=0.15)
    rows = [
        {"custom_id": "streamed", "prompt": "Tell me a story.", "max_tokens": 32, "stream": True},
        {"custom_id": "plain", "prompt": "Tell me a story.", "max_tokens": 32},
    ]
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", rows), extra=f'base_url = "{sim.base_url}"')

    result = run_job(job, api_key="k")

    assert result.exit_code == 0, result.message
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    streamed = records["streamed"]
    # The simulator sends a keep-alive comment at once and the first token after its latency.
    assert 0.15 <= streamed["ttft_s"] <= streamed["latency_s"]
    assert records["plain"]["ttft_s"] is None


def test_a_stream_that_goes_silent_times_out_on_the_idle_limit_and_is_retried(tmp_path: Path, sim) -> None:
    rows = [{"custom_id": "h", "prompt": "[[sim:hang*1]] hello", "max_tokens": 16, "stream": True}]
    log = tmp_path / "trace.jsonl"
    job = job_file(
        tmp_path, write_jsonl(tmp_path / "in.jsonl", rows),
        extra=f'base_url = "{sim.base_url}"\n[limits]\ntimeout_s = 600\nstream_idle_s = 0.3\n',
    )

    result = run_job(job, {"log_path": log}, api_key="k")

    assert result.exit_code == 0, result.message
    [record] = read_jsonl(tmp_path / "out.jsonl")
    assert record["attempts"] == 2
    first = read_jsonl(log)[0]
    assert first["kind"] == "timeout"
    assert "nothing for 0.3 s" in first["message"]
