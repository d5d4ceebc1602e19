"""Other servers than OpenRouter: the simulator's "openai" and "plain" dialects, end to end.

Both serve /v1/chat/completions and send no `usage.cost`, so batchrun prices replies from its own
table; "plain" also takes no key. Checked on both sides: the simulator's request log and the records.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import cli_env, job_file, read_jsonl, run_cli, write_jsonl

from batchrun.config import load_config
from batchrun.pricing import BUILTIN_PRICES
from batchrun.runner import Runner, RunResult
from batchrun.sim import CATALOG, SimServer

KEY = "sk-dialect-0123456789"
PRICED = "openai/gpt-4o-mini"  # in batchrun's built-in price table
UNPRICED = "deepseek/deepseek-r1"  # in the simulator's catalog, not in batchrun's table
BASE_FORMS = ("{root}", "{root}/", "{root}/v1", "{root}/v1/")
ROWS = [
    {"custom_id": "priced", "model": PRICED, "prompt": "Say something about prices.", "max_tokens": 32},
    {"custom_id": "unpriced", "model": UNPRICED, "prompt": "Say something about costs.", "max_tokens": 32},
    {"custom_id": "capped", "model": PRICED, "prompt": "Say something long.", "max_completion_tokens": 3},
]


def run_job(tmp_path: Path, base_url: str, key: str | None) -> RunResult:
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    job = job_file(tmp_path, source, extra=f'base_url = "{base_url}"')
    return asyncio.run(Runner(load_config(job), api_key=key).run())


def records(tmp_path: Path) -> dict[str, dict[str, Any]]:
    return {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}


def check_records(sim: SimServer, tmp_path: Path) -> None:
    """What every dialect run must show: table prices, unknown costs, a cap honoured, chat only."""
    got = records(tmp_path)
    assert set(got) == {"priced", "unpriced", "capped"}
    assert read_jsonl(tmp_path / "out.errors.jsonl") == []
    for record in got.values():
        assert "cost" not in record["response"]["body"]["usage"]
        entry = sim.ledger.by_gen_id(record["response"]["request_id"])
        assert entry is not None
        assert record["usage"]["prompt_tokens"] == entry.prompt_tokens
        assert record["usage"]["completion_tokens"] == entry.completion_tokens
        assert record["provider"] is None  # only OpenRouter names one

    price = CATALOG[PRICED]
    for custom_id in ("priced", "capped"):
        usage = got[custom_id]["usage"]
        expected = usage["prompt_tokens"] * price.prompt_price + usage["completion_tokens"] * price.completion_price
        assert usage["cost_source"] == "price_table"
        assert usage["cost_usd"] == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert got["unpriced"]["usage"]["cost_source"] == "unknown"
    assert got["unpriced"]["usage"]["cost_usd"] is None

    capped = got["capped"]
    assert capped["usage"]["completion_tokens"] == 3
    assert capped["response"]["body"]["choices"][0]["finish_reason"] == "length"

    chats = sim.ledger.received.chats()
    assert [r.path for r in sim.ledger.received.entries()] == ["/v1/chat/completions"] * 3  # no /key, /models
    (capped_body,) = [r.body for r in chats if r.body["messages"][0]["content"] == "Say something long."]
    assert capped_body["max_completion_tokens"] == 3 and "max_tokens" not in capped_body


def test_the_price_table_matches_the_simulators_catalog() -> None:
    # The cost checks below mean something only if both sides agree on the price.
    assert BUILTIN_PRICES[PRICED].prompt == pytest.approx(CATALOG[PRICED].prompt_price, rel=1e-12)
    assert BUILTIN_PRICES[PRICED].completion == pytest.approx(CATALOG[PRICED].completion_price, rel=1e-12)
    assert UNPRICED not in BUILTIN_PRICES


@pytest.mark.parametrize("form", BASE_FORMS)
def test_openai_dialect_with_each_base_url_form(tmp_path: Path, sim_factory, form: str) -> None:
    sim = sim_factory(dialect="openai", api_keys=frozenset({KEY}))

    result = run_job(tmp_path, form.format(root=sim.root_url), KEY)

    assert result.exit_code == 0, result.message
    check_records(sim, tmp_path)
    assert {r.auth_scheme for r in sim.ledger.received.chats()} == {"Bearer"}


@pytest.mark.parametrize("form", BASE_FORMS)
def test_plain_dialect_needs_no_key(tmp_path: Path, sim_factory, monkeypatch, form: str) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    sim = sim_factory(dialect="plain")

    result = run_job(tmp_path, form.format(root=sim.root_url), None)

    assert result.exit_code == 0, result.message
    check_records(sim, tmp_path)
    assert {r.auth_scheme for r in sim.ledger.received.chats()} == {None}  # no Authorization at all


def test_a_server_that_wants_a_key_refuses_a_run_without_one(
    tmp_path: Path, sim_factory, monkeypatch
) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    sim = sim_factory(dialect="openai")

    result = run_job(tmp_path, sim.root_url + "/v1", None)

    assert result.exit_code == 3  # auth_error stops the batch
    counts = sim.ledger.counts()
    assert counts["generations"] == 0 and set(counts["rejections"]) == {"401"}
    assert {r.auth_scheme for r in sim.ledger.received.chats()} == {None}
    assert "key" in result.message.lower()


def test_cli_against_a_plain_server_without_a_key(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(dialect="plain")
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    env = {k: v for k, v in cli_env().items() if k != "OPENROUTER_API_KEY"}

    done = run_cli("run", source, "-o", tmp_path / "out.jsonl", "--base-url", sim.root_url, "--no-progress", env=env)

    assert done.returncode == 0, done.stderr
    check_records(sim, tmp_path)


def test_openai_refuses_openrouter_only_fields_per_line_and_plain_servers_ignore_them(
    tmp_path: Path, sim_factory
) -> None:
    rows = [
        {"custom_id": "routed", "model": PRICED, "prompt": "Hi.", "max_tokens": 8,
         "provider": {"order": ["Azure"]}},
        {"custom_id": "plain", "model": PRICED, "prompt": "Hi.", "max_tokens": 8},
    ]
    outcomes = {}
    for dialect in ("openai", "plain"):
        folder = tmp_path / dialect
        folder.mkdir()
        sim = sim_factory(dialect=dialect)
        job = job_file(folder, write_jsonl(folder / "in.jsonl", rows), extra=f'base_url = "{sim.base_url}"')
        result = asyncio.run(Runner(load_config(job), api_key=KEY).run())
        outcomes[dialect] = (result.exit_code, records(folder), read_jsonl(folder / "out.errors.jsonl"))

    code, done, errors = outcomes["openai"]
    assert code == 1 and set(done) == {"plain"}  # one bad line does not stop the job
    [error] = errors
    assert error["custom_id"] == "routed" and error["error"]["code"] == "invalid_request"
    assert error["attempts"] == 1 and "Unrecognized request argument supplied: provider" in error["error"]["message"]
    code, done, errors = outcomes["plain"]
    assert code == 0 and set(done) == {"routed", "plain"} and errors == []


@pytest.mark.parametrize("dialect", ["openai", "plain"])
def test_openai_style_servers_have_no_api_prefix_and_no_openrouter_routes(sim_factory, dialect: str) -> None:
    import urllib.error
    import urllib.request

    sim = sim_factory(dialect=dialect)
    root = sim.base_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/v1/models", timeout=10) as answer:
        listing = orjson.loads(answer.read())
    assert listing["object"] == "list" and all("pricing" not in m for m in listing["data"])
    for path in ("/api/v1/models", "/api/v1/chat/completions", "/v1/key", "/v1/generation?id=x"):
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{root}{path}", timeout=10)
        missing.value.close()
        assert missing.value.code in (404, 405), path
