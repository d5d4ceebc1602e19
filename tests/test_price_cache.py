"""Provider prices: fetched from /models once, cached between runs, and reasoning priced right.

The simulator is told to send ``usage.cost: null`` (OpenRouter's schema allows it), so the cost
batchrun writes is tokens × the prices it holds: which prices those are shows which list (cached
or fetched) it used.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import job_file, read_jsonl, run_job, write_jsonl

from batchrun.price_cache import MAX_AGE_S, cache_file, read_prices, write_prices
from batchrun.sim.catalog import CATALOG
from batchrun.transport import api_root
from batchrun.units import duration_text, usd

R1 = "deepseek/deepseek-r1"  # a reasoning model: its completion tokens include reasoning tokens


def run_priced_job(tmp_path: Path, sim, name: str) -> dict:
    rows = [{"custom_id": "r", "prompt": "Think about item 1.", "max_tokens": 300,
             "reasoning": {"effort": "high"}}]
    job = job_file(
        tmp_path, write_jsonl(tmp_path / f"{name}.in.jsonl", rows), output=tmp_path / f"{name}.jsonl",
        extra=f'base_url = "{sim.base_url}"\nmodel = "{R1}"\napi = "openrouter"\n',
    )
    result = run_job(job, api_key="k")
    assert result.exit_code == 0, result.message
    [record] = read_jsonl(tmp_path / f"{name}.jsonl")
    return record


def test_prices_are_fetched_once_cached_and_fetched_again_when_a_day_old(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(report_cost=False)
    root = api_root(sim.base_url)
    assert read_prices(root) is None

    first = run_priced_job(tmp_path, sim, "first")
    entry = sim.ledger.by_gen_id(first["response"]["request_id"])
    assert entry is not None and entry.reasoning_tokens > 0
    assert first["usage"]["cost_source"] == "price_table"
    assert first["usage"]["reasoning_tokens"] == entry.reasoning_tokens
    # Reasoning is billed inside the completion, at the completion price (internal_reasoning "0").
    assert first["usage"]["cost_usd"] == pytest.approx(entry.cost, abs=1e-9)
    cached = read_prices(root)
    assert cached is not None and cached.fresh()

    # Make the cached list say ten times the price: a run that uses the cache bills that.
    doc = orjson.loads(cache_file(root).read_bytes())
    for model in doc["models"]["data"]:
        if model["id"] == R1:
            model["pricing"]["prompt"] = str(float(model["pricing"]["prompt"]) * 10)
            model["pricing"]["completion"] = str(float(model["pricing"]["completion"]) * 10)
    cache_file(root).write_bytes(orjson.dumps(doc))
    second = run_priced_job(tmp_path, sim, "second")
    entry = sim.ledger.by_gen_id(second["response"]["request_id"])
    assert second["usage"]["cost_usd"] == pytest.approx(10 * entry.cost, rel=1e-9)

    # A day later the list is fetched again, and the true prices come back.
    doc["fetched_at"] = time.time() - MAX_AGE_S - 60
    cache_file(root).write_bytes(orjson.dumps(doc))
    third = run_priced_job(tmp_path, sim, "third")
    entry = sim.ledger.by_gen_id(third["response"]["request_id"])
    assert third["usage"]["cost_usd"] == pytest.approx(entry.cost, abs=1e-9)
    refreshed = read_prices(root)
    assert refreshed is not None and refreshed.fresh()


def test_the_cache_keeps_only_pricing_per_api_root_and_says_its_age(tmp_path: Path) -> None:
    listing: dict[str, Any] = {"data": [
        {"id": "a/one", "name": "One", "context_length": 8192,
         "pricing": {"prompt": "0.000001", "completion": "0.000002"}},
        {"id": "a/unpriced"},
    ]}
    path = write_prices("https://example.test/api/v1", listing, now=1000.0)
    assert path is not None and path.parent == tmp_path / "cache"
    cached = read_prices("https://example.test/api/v1")
    assert cached is not None
    assert cached.payload == {"data": [{"id": "a/one", "pricing": listing["data"][0]["pricing"]}]}
    assert cached.age_s(now=1000.0 + 7200) == 7200 and not cached.fresh(now=1000.0 + MAX_AGE_S)
    assert read_prices("https://other.test/api/v1") is None  # another server never shares prices
    path.write_bytes(b'{"format": 1, "api_root": "https://example.test/api/v1"')  # torn
    assert read_prices("https://example.test/api/v1") is None


def test_a_cache_directory_that_cannot_be_written_is_not_an_error(tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("BATCHRUN_CACHE_DIR", str(blocker / "cache"))
    assert write_prices("https://example.test/api/v1", {"data": []}) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5.0 s"), (41, "41 s"), (600, "10 min"), (3 * 3600, "3.0 h"), (3 * 86400, "3.0 days")],
)
def test_duration_text(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


@pytest.mark.parametrize(
    ("amount", "text"),
    [(12.345, "$12.35"), (0.0123, "$0.0123"), (0.0000164, "$0.000016"), (0.0, "$0"), (1e-9, "<$0.000001")],
)
def test_usd_keeps_the_digits_that_matter(amount: float, text: str) -> None:
    assert usd(amount) == text


def test_a_simulator_job_without_provider_cost_is_priced_from_the_simulators_list(tmp_path: Path) -> None:
    rows = [{"custom_id": f"n{i}", "prompt": f"Say {i}.", "max_tokens": 8} for i in range(3)]
    job = job_file(
        tmp_path, write_jsonl(tmp_path / "in.jsonl", rows),
        extra=f'base_url = "sim"\nmodel = "{R1}"\n[sim]\nno_cost = true\n',
    )
    result = run_job(job, api_key=None)

    assert result.exit_code == 0, result.message
    for record in read_jsonl(tmp_path / "out.jsonl"):
        assert record["response"]["body"]["usage"]["cost"] is None
        usage = record["usage"]
        assert usage["cost_source"] == "price_table"  # R1 is not in the built-in table: from /models
        price = CATALOG[R1]
        expected = usage["prompt_tokens"] * price.prompt_price + usage["completion_tokens"] * price.completion_price
        assert usage["cost_usd"] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("report_cost", [True, False])
def test_cached_prompt_tokens_are_billed_as_the_simulator_bills_them(
    tmp_path: Path, sim_factory, report_cost: bool
) -> None:
    # A long system prompt shared by every line: after the first, the simulator reads it from its
    # prompt cache, as OpenAI and Gemini do, and bills it at the cache-read price.
    sim = sim_factory(report_cost=report_cost)
    rows = [{"custom_id": f"c{i}", "prompt": f"Question {i}?", "max_tokens": 8} for i in range(5)]
    job = job_file(
        tmp_path, write_jsonl(tmp_path / "in.jsonl", rows),
        extra=f'base_url = "{sim.base_url}"\nsystem = "{"Follow these rules. " * 400}"\n'
              "[limits]\nconcurrency = 1\n",
    )
    result = run_job(job, api_key="k")

    assert result.exit_code == 0, result.message
    records = read_jsonl(tmp_path / "out.jsonl")
    assert sum(1 for r in records if r["usage"]["cached_tokens"]) == 4  # all but the first
    for record in records:
        entry = sim.ledger.by_gen_id(record["response"]["request_id"])
        assert record["usage"]["cached_tokens"] == entry.cached_tokens
        assert record["usage"]["cost_source"] == ("provider" if report_cost else "price_table")
        assert record["usage"]["cost_usd"] == pytest.approx(entry.cost, abs=1e-9)
    assert result.summary.cost_usd == pytest.approx(sim.ledger.billed_total_usd(), abs=1e-9)
