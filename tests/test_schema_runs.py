"""Structured outputs through the real runner: replies validated, parsed objects stored, failures retried."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import job_file, prompts, read_jsonl, run_job, write_jsonl

from batchrun.config import load_config
from batchrun.errors import ResumeMismatch

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"label": {"enum": ["positive", "negative", "neutral"]}, "confidence": {"type": "number"}},
    "required": ["label", "confidence"],
    "additionalProperties": False,
}


def test_replies_that_match_the_schema_are_stored_parsed(tmp_path: Path, sim) -> None:
    rows = [
        {**row, "response_format": {"type": "json_schema", "json_schema": {"name": "l", "schema": SCHEMA}}}
        for row in prompts(20, max_tokens=64)
    ]
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", rows), extra=f'base_url = "{sim.base_url}"')
    result = run_job(job, api_key="k")
    assert result.exit_code == 0, result.message
    records = read_jsonl(tmp_path / "out.jsonl")
    assert len(records) == 20
    assert all(r["parsed"]["label"] in SCHEMA["properties"]["label"]["enum"] for r in records)


def test_a_reply_that_fails_the_job_schema_is_invalid_output_after_its_own_retries(tmp_path: Path, sim) -> None:
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", prompts(3)), extra=f'base_url = "{sim.base_url}"')
    config = load_config(job, {"schema": SCHEMA, "schema_retries": 1})
    result = run_job(config, api_key="k")
    assert result.exit_code == 1
    errors = read_jsonl(tmp_path / "out.errors.jsonl")
    assert [e["error"]["code"] for e in errors] == ["invalid_output"] * 3
    assert all(e["attempts"] == 2 for e in errors)  # the first try and one schema retry
    assert all(e["billed_usd"] > 0 for e in errors)  # replies that failed were still paid for
    assert sim.ledger.counts()["billed"] == 6


def test_resuming_with_another_job_schema_is_refused_without_force(tmp_path: Path, sim) -> None:
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", prompts(3, max_tokens=64)),
                   extra=f'base_url = "{sim.base_url}"')
    # The simulator's free-text replies fail the job's schema: what matters here is the manifest.
    run_job(job, {"schema": SCHEMA, "limit": 1}, api_key="k")
    other = {**SCHEMA, "required": ["label"]}

    with pytest.raises(ResumeMismatch, match="request schema"):
        run_job(job, {"schema": other}, api_key="k")
    forced = run_job(job, {"schema": other, "force": True}, api_key="k")
    assert forced.stop_kind is None
    assert run_job(job, {"schema": other}, api_key="k").stop_kind is None
