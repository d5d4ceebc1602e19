"""Other servers than OpenRouter: the simulator's "openai" and "plain" dialects, end to end.

Both serve /v1/chat/completions and send no `usage.cost`, so batchrun prices replies from the job's
[pricing] (its built-in table is OpenRouter's and OpenAI's, not a self-hosted server's); "plain"
also takes no key, and the OpenRouter key in the environment is never sent to either. Checked on
both sides: the simulator's request log and the records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import cli_env, job_file, read_jsonl, run_cli, run_job, write_jsonl

from batchrun.runner import RunResult
from batchrun.sim import CATALOG, SimServer

KEY = "sk-dialect-0123456789"
PRICED = "openai/gpt-4o-mini"  # priced by the job's [pricing] (and in the built-in table, unused here)
UNPRICED = "deepseek/deepseek-r1"  # in the simulator's catalog, priced nowhere
BASE_FORMS = ("{root}", "{root}/", "{root}/v1", "{root}/v1/")
ROWS = [
    {"custom_id": "priced", "model": PRICED, "prompt": "Say something about prices.", "max_tokens": 32},
    {"custom_id": "unpriced", "model": UNPRICED, "prompt": "Say something about costs.", "max_tokens": 32},
    {"custom_id": "capped", "model": PRICED, "prompt": "Say something long.", "max_completion_tokens": 3},
]


def pricing_table() -> str:
    price = CATALOG[PRICED]
    return (f'[pricing."{PRICED}"]\nprompt_per_m = {price.prompt_price * 1e6!r}\n'
            f"completion_per_m = {price.completion_price * 1e6!r}\n")


def run_dialect_job(tmp_path: Path, base_url: str, key: str | None) -> RunResult:
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    job = job_file(tmp_path, source, extra=f'base_url = "{base_url}"\n{pricing_table()}')
    return run_job(job, api_key=key)


def records(tmp_path: Path) -> dict[str, dict[str, Any]]:
    return {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}


def check_records(sim: SimServer, tmp_path: Path, *, priced: bool = True) -> None:
    """What every dialect run must show: [pricing] prices, unknown costs, a cap honoured, chat only."""
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
    for custom_id in ("priced", "capped") if priced else ():
        usage = got[custom_id]["usage"]
        expected = usage["prompt_tokens"] * price.prompt_price + usage["completion_tokens"] * price.completion_price
        assert usage["cost_source"] == "price_table"
        assert usage["cost_usd"] == pytest.approx(expected, rel=1e-9, abs=1e-15)
    for custom_id in ("unpriced",) if priced else ("priced", "capped", "unpriced"):
        assert got[custom_id]["usage"]["cost_source"] == "unknown"
        assert got[custom_id]["usage"]["cost_usd"] is None

    capped = got["capped"]
    assert capped["usage"]["completion_tokens"] == 3
    assert capped["response"]["body"]["choices"][0]["finish_reason"] == "length"

    chats = sim.ledger.received.chats()
    assert [r.path for r in sim.ledger.received.entries()] == ["/v1/chat/completions"] * 3  # no /key, /models
    (capped_body,) = [r.body for r in chats if r.body["messages"][0]["content"] == "Say something long."]
    assert capped_body["max_completion_tokens"] == 3 and "max_tokens" not in capped_body


@pytest.mark.parametrize("form", BASE_FORMS)
def test_openai_dialect_with_each_base_url_form(tmp_path: Path, sim_factory, form: str) -> None:
    sim = sim_factory(dialect="openai", api_keys=frozenset({KEY}))

    result = run_dialect_job(tmp_path, form.format(root=sim.root_url), KEY)

    assert result.exit_code == 0, result.message
    check_records(sim, tmp_path)
    assert {r.auth_scheme for r in sim.ledger.received.chats()} == {"Bearer"}


@pytest.mark.parametrize("form", BASE_FORMS)
def test_plain_dialect_needs_no_key(tmp_path: Path, sim_factory, monkeypatch, form: str) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    sim = sim_factory(dialect="plain")

    result = run_dialect_job(tmp_path, form.format(root=sim.root_url), None)

    assert result.exit_code == 0, result.message
    check_records(sim, tmp_path)
    assert {r.auth_scheme for r in sim.ledger.received.chats()} == {None}  # no Authorization at all


def test_a_server_that_wants_a_key_refuses_a_run_without_one(
    tmp_path: Path, sim_factory, monkeypatch
) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    sim = sim_factory(dialect="openai")

    result = run_dialect_job(tmp_path, sim.root_url + "/v1", None)

    assert result.exit_code == 3  # auth_error stops the batch
    counts = sim.ledger.counts()
    assert counts["generations"] == 0 and set(counts["rejections"]) == {"401"}
    assert {r.auth_scheme for r in sim.ledger.received.chats()} == {None}
    assert "key" in result.message.lower()


def test_cli_against_a_plain_server_sends_no_openrouter_key_and_prices_nothing_by_name(
    tmp_path: Path, sim_factory
) -> None:
    sim = sim_factory(dialect="plain")
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)

    done = run_cli("run", source, "-o", tmp_path / "out.jsonl", "--base-url", sim.root_url, "--no-progress")

    assert done.returncode == 0, done.stderr
    # OPENROUTER_API_KEY is set (cli_env), yet it goes to OpenRouter only.
    assert {r.auth_scheme for r in sim.ledger.received.chats()} == {None}
    # gpt-4o-mini is in the built-in table, but a self-hosted server's model name says nothing of
    # its price: without [pricing] the cost is unknown.
    check_records(sim, tmp_path, priced=False)


def test_api_key_env_names_the_variable_sent_to_another_server(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(dialect="openai", api_keys=frozenset({KEY}))
    source = write_jsonl(tmp_path / "in.jsonl", ROWS[:1])
    args = ("run", source, "-o", tmp_path / "out.jsonl", "--base-url", sim.base_url, "--no-progress")

    refused = run_cli(*args)
    done = run_cli(*args, "--api-key-env", "MY_SERVER_KEY", env=cli_env(MY_SERVER_KEY=KEY))

    assert refused.returncode == 3
    assert "none was sent" in refused.stderr and "--api-key-env" in refused.stderr
    assert done.returncode == 0, done.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 1


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
        result = run_job(job, api_key=KEY)
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


def test_streams_ask_for_usage_where_the_server_sends_it_only_when_asked(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(dialect="openai")
    rows = [
        {"custom_id": "asked", "model": PRICED, "prompt": "Stream it.", "max_tokens": 16, "stream": True},
        {"custom_id": "own", "model": PRICED, "prompt": "Stream it.", "max_tokens": 16, "stream": True,
         "stream_options": {"include_usage": False}},
    ]
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", rows),
                   extra=f'base_url = "{sim.base_url}"\n{pricing_table()}')

    result = run_job(job, api_key=KEY)

    assert result.exit_code == 0, result.message
    got = records(tmp_path)
    bodies = {r.body["stream_options"]["include_usage"]: r.body for r in sim.ledger.received.chats()}
    assert set(bodies) == {True, False}  # batchrun asked where the line did not say; the line's own kept
    entry = sim.ledger.by_gen_id(got["asked"]["response"]["request_id"])
    assert got["asked"]["usage"]["completion_tokens"] == entry.completion_tokens
    assert got["asked"]["usage"]["cost_source"] == "price_table"
    # No usage came back: the record says unknown, not zero tokens.
    assert got["own"]["usage"]["completion_tokens"] is None
    assert got["own"]["usage"]["cost_source"] == "unknown"
