"""`batchrun estimate`: counted like a run, priced with stated bounds that hold on the simulator."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from conftest import job_file, prompts, read_jsonl, run_cli, run_job, write_jsonl

from batchrun.config import load_config
from batchrun.estimate import ASSUMED_LATENCY_S, estimate
from batchrun.pricing import BUILTIN_PRICES
from batchrun.sim.catalog import CATALOG

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("job", ["label-reviews.toml", "summarize-articles.toml"])
def test_estimate_of_a_sample_job_brackets_the_real_cost_on_the_simulator(
    tmp_path: Path, sim_factory, job: str
) -> None:
    config = load_config(ROOT / "jobs" / job, {"output": tmp_path / "out.jsonl"})
    guess = estimate(config)
    # Retried server errors like the job's [sim] ones (not 429s: the pool's slow-down after a 429
    # costs seconds, not money); rate limits off: they change the time, not the cost.
    sim = sim_factory(faults={"500": 0.02, "502": 0.01}, seed=5)
    run_config = replace(config, base_url=sim.base_url, rpm=None, backoff_base_s=0.01, backoff_cap_s=0.02)

    result = run_job(run_config, api_key="sk-or-test")

    assert result.exit_code == 0, result.message
    real_cost = result.summary.cost_usd
    assert real_cost == pytest.approx(sim.ledger.billed_total_usd(), abs=1e-9)
    lines = len((ROOT / config.input).read_bytes().splitlines())
    assert guess.requests == result.summary.succeeded == lines
    assert guess.invalid_lines == 0 and guess.unbounded == 0 and guess.worst_bounded
    assert guess.output_tokens_worst == lines * config.params["max_tokens"]
    assert result.summary.completion_tokens <= guess.output_tokens_worst
    # The input estimate is within its stated ±20 % of what the simulator counted.
    real_prompt = result.summary.prompt_tokens
    assert 0.8 * guess.input_tokens <= real_prompt <= 1.2 * guess.input_tokens
    # The stated bounds hold: low <= real <= worst, and the expected cost lies between them.
    assert guess.cost_low <= real_cost <= guess.cost_worst
    assert guess.cost_low <= guess.cost_expected <= guess.cost_worst
    assert abs(guess.cost_expected - real_cost) / real_cost < 0.5


def test_estimate_counts_like_a_run_invalid_unbounded_unpriced_limit_and_done(tmp_path: Path) -> None:
    rows = [orjson.dumps(p) for p in prompts(6, max_tokens=10)]
    rows += [b"not json", b'{"custom_id": "p0", "prompt": "duplicate"}']
    rows.append(orjson.dumps({"custom_id": "free", "prompt": "x" * 40}))  # no max_tokens
    rows.append(orjson.dumps({"custom_id": "odd", "model": "acme/unknown", "prompt": "hi", "max_tokens": 5}))
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(rows) + b"\n\n")
    write_jsonl(tmp_path / "out.jsonl", [{"custom_id": "p1", "error": None}])  # p1 is already done
    config = load_config(job_file(tmp_path, source), {"rpm": 60.0, "tpm": 600.0, "concurrency": 2})

    guess = estimate(config)

    assert guess.lines_read == 10
    assert guess.already_done == 1
    assert guess.invalid_lines == 2
    assert guess.requests == 7  # p0, p2..p5, free, odd
    assert guess.unbounded == 1 and not guess.worst_bounded
    assert dict(guess.unpriced) == {"acme/unknown": 1}
    assert guess.output_tokens_worst == 5 * 10 + 5
    durations = guess.durations_s()
    assert durations["rpm"] == pytest.approx(7 / 60 * 60)
    assert durations["tpm"] == pytest.approx(guess.booked_tokens / 600 * 60)
    assert durations["concurrency"] == pytest.approx(7 * ASSUMED_LATENCY_S / 2)
    assert guess.duration_s == max(v for v in durations.values() if v is not None)
    text = "\n".join(guess.lines())
    assert "1 requests have no max_tokens: unbounded" in text
    assert "no price known for acme/unknown" in text
    assert "4 characters per token" in text
    price = BUILTIN_PRICES[config.model]
    # expected: 5 bounded requests at half their max_tokens, and 256 tokens for the unbounded one.
    output_part = (5 * 0.5 * 10 + 256) * price.completion
    assert guess.cost_expected - guess.cost_low / 0.8 == pytest.approx(output_part, rel=1e-9)

    limited = estimate(replace(config, limit=3))
    assert limited.lines_read == 3 and limited.requests == 2  # p0, p2 (p1 is done)


def _peak_bytes_of_estimate(tmp_path: Path, lines: int) -> int:
    source = tmp_path / f"big{lines}.jsonl"
    with open(source, "wb") as f:
        for i in range(lines):
            f.write(orjson.dumps({"custom_id": f"b{i}", "prompt": "word " * 100_000, "max_tokens": 8}) + b"\n")
    config = load_config(source, {"output": tmp_path / "out.jsonl"})
    tracemalloc.start()
    try:
        assert estimate(config).requests == lines
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_estimate_streams_the_input_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    small = _peak_bytes_of_estimate(tmp_path, 3)
    large = _peak_bytes_of_estimate(tmp_path, 40)  # 20 MB: 13 times the lines, same peak

    assert large < 1.5 * small, f"peak {large:,} bytes for 40 lines, {small:,} for 3"


def test_estimate_cli_sends_nothing_and_prints_json(tmp_path: Path, sim) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(30, max_tokens=20))
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\n[limits]\nrpm = 600\n')

    shown = run_cli("estimate", job, "--json", "--concurrency", "4", "-p", "temperature=0")
    text = run_cli("estimate", job, "--limit", "10")

    assert shown.returncode == 0, shown.stderr
    data = orjson.loads(shown.stdout)
    assert data["requests"] == 30
    assert data["output_tokens_worst"] == 600
    assert data["duration_s"]["rpm"] == pytest.approx(3.0)
    assert data["duration_s"]["concurrency"] == pytest.approx(30 * ASSUMED_LATENCY_S / 4)
    assert data["cost_usd"]["low"] <= data["cost_usd"]["expected"] <= data["cost_usd"]["worst"]
    assert text.returncode == 0, text.stderr
    assert "requests 10" in text.stdout and "duration" in text.stdout
    assert sim.ledger.counts()["requests"] == 0, "estimate must send nothing"
    assert read_jsonl(tmp_path / "out.jsonl") == []


def test_estimate_fetches_prices_only_when_asked_and_then_prices_from_the_cache(tmp_path: Path, sim) -> None:
    model = "deepseek/deepseek-r1"  # not in the built-in table: only /models knows its price
    source = write_jsonl(tmp_path / "in.jsonl", prompts(20, max_tokens=100))
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\nmodel = "{model}"\n')

    offline = run_cli("estimate", job, "--json")
    fetched = run_cli("estimate", job, "--json", "--fetch-prices")
    cached = run_cli("estimate", job)

    assert offline.returncode == 0, offline.stderr
    assert orjson.loads(offline.stdout)["requests_without_price"] == {model: 20}
    assert fetched.returncode == 0, fetched.stderr
    data = orjson.loads(fetched.stdout)
    assert data["requests_without_price"] == {}
    assert data["price_sources"][model] == "/models, fetched now"
    price = CATALOG[model]
    assert data["cost_usd"]["worst"] == pytest.approx(
        1.2 * data["input_tokens_est"] * price.prompt_price + 20 * 100 * price.completion_price, rel=1e-9
    )
    assert cached.returncode == 0, cached.stderr
    assert f"prices: {model} from /models, fetched " in cached.stdout
    assert sim.ledger.counts()["requests"] == 0, "estimate must send no chat request"


def test_estimate_fetch_prices_from_a_server_that_is_not_there_is_one_clear_line(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    shown = run_cli("estimate", source, "--fetch-prices", "--base-url", "http://127.0.0.1:9/api/v1")

    assert shown.returncode == 2
    assert "could not fetch prices from http://127.0.0.1:9/api/v1/models" in shown.stderr
    assert "Traceback" not in shown.stderr


def test_estimate_of_a_simulator_job_prices_from_the_simulator_catalog(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    shown = run_cli("estimate", source, "--model", "deepseek/deepseek-r1", "--base-url", "sim")

    assert shown.returncode == 0, shown.stderr
    assert "prices: deepseek/deepseek-r1 from the simulator's /models" in shown.stdout
