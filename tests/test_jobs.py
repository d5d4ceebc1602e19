"""The example jobs in jobs/ run on the simulator, and their outputs export as labeled datasets."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

from conftest import read_jsonl, run_job

from batchrun.config import load_config
from batchrun.export import export
from batchrun.schema import schema_of, validate_reply

JOBS = Path(__file__).parent.parent / "jobs"


def run_trial(job: Path, output: Path, limit: int = 20):
    config = load_config(job, {"output": output, "limit": limit})
    assert config.use_sim is False  # the job targets OpenRouter; --sim switches it
    config = load_config(job, {"output": output, "limit": limit, "base_url": "sim"})
    return config, run_job(config, api_key=None)


def test_label_reviews_structured_replies_match_the_jobs_schema(tmp_path: Path) -> None:
    config, result = run_trial(JOBS / "label-reviews-structured.toml", tmp_path / "out.jsonl")
    assert result.exit_code == 0, result.message
    schema = schema_of(config.params, None)
    assert schema is not None and schema["properties"]["label"]["enum"] == ["positive", "negative", "neutral"]
    records = read_jsonl(tmp_path / "out.jsonl")
    assert len(records) == 20
    for record in records:
        parsed, error = validate_reply(record["response"]["body"], schema)
        assert error is None, error
        assert parsed["label"] in ("positive", "negative", "neutral")


def test_label_csv_exports_back_to_csv_with_its_labels(tmp_path: Path) -> None:
    config, result = run_trial(JOBS / "label-csv.toml", tmp_path / "out.jsonl")
    assert result.exit_code == 0, result.message
    assert config.input.name == "tickets.csv"
    written = export(tmp_path / "out.jsonl", input_order=True, destination=tmp_path / "labeled.csv")
    with open(written.path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 200 and written.not_run == 180
    assert list(rows[0])[:3] == ["id", "subject", "body"]
    assert all(r["output"] in ("billing", "bug", "feature", "other") for r in rows[:20])
    assert {r["status"] for r in rows[20:]} == {"not_run"}


def test_route_reviews_routes_by_provider_and_sends_attribution(tmp_path: Path, sim) -> None:
    config = load_config(JOBS / "route-reviews.toml", {"output": tmp_path / "out.jsonl", "limit": 20})
    assert config.base_url.startswith("https://openrouter.ai")
    result = run_job(replace(config, base_url=sim.base_url), api_key="sk-or-test")

    assert result.exit_code == 0, result.message
    records = read_jsonl(tmp_path / "out.jsonl")
    assert len(records) == 20
    assert {(r["model"], r["provider"]) for r in records} == {("google/gemini-2.0-flash-lite-001", "Google AI Studio")}
    for received in sim.ledger.received.chats():
        assert received.body["models"] == config.params["models"]
        assert received.body["provider"] == config.params["provider"]
        assert received.header("HTTP-Referer") == "https://example.org/review-labels"
        assert received.header("X-OpenRouter-Title") == "review labels"
        assert received.header("X-Title") is None  # replaced by X-OpenRouter-Title, not sent twice


def test_local_server_job_runs_keyless_and_is_priced_by_its_table(tmp_path: Path, sim_factory, monkeypatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-must-not-leave")
    monkeypatch.delenv("LOCAL_LLM_KEY", raising=False)
    sim = sim_factory(dialect="plain")
    config = load_config(JOBS / "local-server.toml", {"output": tmp_path / "out.jsonl", "limit": 5})
    result = run_job(replace(config, base_url=sim.root_url), api_key=None)

    assert result.exit_code == 0, result.message
    price = config.pricing["gemma-3-270m"]
    records = read_jsonl(tmp_path / "out.jsonl")
    assert len(records) == 5
    for record in records:
        usage = record["usage"]
        assert record["model"] == "gemma-3-270m"
        assert usage["cost_source"] == "price_table"
        expected = usage["prompt_tokens"] * price.prompt + usage["completion_tokens"] * price.completion
        assert usage["cost_usd"] == expected
    assert {r.auth_scheme for r in sim.ledger.received.entries()} == {None}


def test_summarize_articles_batch_runs_through_the_batch_api_at_half_price(tmp_path: Path) -> None:
    job = JOBS / "summarize-articles-batch.toml"
    assert load_config(job).mode == "batch" and load_config(job).purge
    config = load_config(job, {"output": tmp_path / "out.jsonl", "base_url": "sim", "poll_interval_s": 0.2})
    result = run_job(config, api_key=None)
    assert result.exit_code == 0, result.message
    records = read_jsonl(tmp_path / "out.jsonl")
    assert len(records) == 200 and all(r["batch_id"] for r in records)
    journal = read_jsonl(tmp_path / "out.batches.jsonl")
    assert any(op["op"] == "purged" for op in journal), "purge = true deletes the batch once written"
