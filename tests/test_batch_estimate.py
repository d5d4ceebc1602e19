"""The batch price (a model's :batch entry, or OpenAI's half) and estimate's sync vs batch figures."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import prompts, run_cli, write_jsonl

from batchrun.config import load_config
from batchrun.estimate import estimate, price_book
from batchrun.pricing import Price, PriceBook


def test_batch_price_from_the_batch_entry_the_job_or_half_of_openai() -> None:
    book = PriceBook({"a/own:batch": Price.per_million(1.0, 2.0)})
    book.load_models_payload({"data": [
        {"id": "a/m", "pricing": {"prompt": "0.000002", "completion": "0.000008"}},
        {"id": "a/m:batch", "pricing": {"prompt": "0.000001", "completion": "0.000004"}},
        {"id": "a/none", "pricing": {"prompt": "0.000002", "completion": "0.000008"}},
    ]}, "/models")
    assert book.batch_price("a/m") == Price(1e-6, 4e-6)
    assert book.batch_source("a/m") == "/models (a/m:batch)"
    assert book.batch_price("a/own") == Price.per_million(1.0, 2.0)
    assert book.batch_price("a/none") is None  # OpenRouter's discount differs by model: not guessed
    half = PriceBook().batch_price("gpt-4o-mini", half_of_sync=True)
    assert half is not None and half.prompt == pytest.approx(0.075e-6)
    assert PriceBook().batch_source("gpt-4o-mini", half_of_sync=True) == "half of the price from the built-in table"


def test_estimate_shows_sync_and_batch_side_by_side(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(40, max_tokens=16))
    config = load_config(tmp_path / "in.jsonl", {"base_url": "sim"})
    result = estimate(config, price_book(config))
    assert result.batch_expected == pytest.approx(result.cost_expected / 2)
    assert result.batch_worst == pytest.approx(result.cost_worst / 2)
    assert not result.batch_unpriced
    shown = run_cli("estimate", tmp_path / "in.jsonl", "--base-url", "sim")
    assert shown.returncode == 0, shown.stderr
    batch_line = next(line for line in shown.stdout.splitlines() if line.startswith("batch (--mode batch)"))
    assert "50% less than sync" in batch_line and ":batch" in batch_line


def test_estimate_says_when_no_batch_price_is_known(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(3))
    job = tmp_path / "job.toml"
    job.write_text(f'input = "{tmp_path / "in.jsonl"}"\nbase_url = "http://127.0.0.1:9/api/v1"\n'
                   'model = "x/unknown"\n[pricing."x/unknown"]\nprompt_per_m = 1\ncompletion_per_m = 2\n')
    result = estimate(load_config(job))
    assert result.batch_unpriced == {"x/unknown": 3}
    assert any("no batch price known for x/unknown" in line for line in result.lines())
