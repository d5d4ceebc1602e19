"""OpenRouter request features, end to end: real jobs against the simulator on loopback.

Each test runs a batchrun job, then checks both sides: what the simulator received (its request
log) and what the output records say. "Unchanged" is checked on canonical JSON (sorted keys), so
1 vs 1.0 vs true, or one changed byte in a string, is a difference.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import job_file, read_jsonl, run_cli, run_job, write_jsonl

from batchrun.config import DEFAULT_MODEL
from batchrun.runner import RunResult
from batchrun.sim import CATALOG, SimServer
from batchrun.sim.received import Received

KEY = "sk-or-features-0123456789"
MINI = "openai/gpt-4o-mini"
R1 = "deepseek/deepseek-r1"


# -- helpers --------------------------------------------------------------------------------


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def toml_value(value: Any) -> str:
    """Write a JSON-like value as TOML (inline tables and arrays; JSON strings are TOML strings)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def toml_table(name: str, values: dict[str, Any]) -> str:
    return f"[{name}]\n" + "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in values.items())


def make_job(tmp_path: Path, sim: SimServer, rows: list[dict[str, Any]], extra: str = "") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    return job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\n{extra}')


def run(job: Path, key: str | None = KEY) -> RunResult:
    return run_job(job, api_key=key)


def results(job: Path) -> dict[str, dict[str, Any]]:
    return {r["custom_id"]: r for r in read_jsonl(job.parent / "out.jsonl")}


def errors(job: Path) -> dict[str, dict[str, Any]]:
    return {r["custom_id"]: r for r in read_jsonl(job.parent / "out.errors.jsonl")}


def received_by_prompt(sim: SimServer) -> dict[str, Received]:
    """The chat requests the simulator received, by the text of their last message."""
    return {r.body["messages"][-1]["content"]: r for r in sim.ledger.received.chats()}


def message(record: dict[str, Any]) -> dict[str, Any]:
    return record["response"]["body"]["choices"][0]["message"]


def line(custom_id: str, **fields: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "prompt": f"Say something about {custom_id}.", **fields}


def assert_billed_as_ledger(sim: SimServer, record: dict[str, Any]) -> Any:
    entry = sim.ledger.by_gen_id(record["response"]["request_id"])
    assert entry is not None and entry.billed
    assert record["model"] == entry.model
    assert record["provider"] == entry.provider
    assert record["usage"]["prompt_tokens"] == entry.prompt_tokens
    assert record["usage"]["completion_tokens"] == entry.completion_tokens
    assert record["usage"]["cost_usd"] == pytest.approx(entry.cost, abs=1e-12)
    assert record["billed_usd"] == pytest.approx(entry.cost, abs=1e-12)
    return entry


# -- models: the fallback list --------------------------------------------------------------


def test_models_fallback_is_billed_at_the_model_that_served(tmp_path: Path, sim: SimServer) -> None:
    rows = [
        line("retired", model="google/gemini-1.5-flash", models=["google/gemini-1.5-flash", MINI], max_tokens=16),
        line("unknown", model="nobody/no-such-model",
             models=["nobody/no-such-model", "anthropic/claude-3.5-haiku"], max_tokens=16),
    ]
    job = make_job(tmp_path, sim, rows)

    result = run(job)

    assert result.exit_code == 0, result.message
    records = results(job)
    served = {"retired": MINI, "unknown": "anthropic/claude-3.5-haiku"}
    for custom_id, model in served.items():
        record = records[custom_id]
        assert record["model"] == model
        entry = assert_billed_as_ledger(sim, record)
        price = CATALOG[model]
        expected = entry.prompt_tokens * price.prompt_price + entry.completion_tokens * price.completion_price
        assert record["usage"]["cost_usd"] == pytest.approx(expected, abs=1e-12)
    sent = received_by_prompt(sim)
    for row in rows:
        body = sent[row["prompt"]].body
        assert canonical(body["models"]) == canonical(row["models"])
        assert body["model"] == row["model"]
    assert len(sim.ledger.received.chats()) == 2  # one request each: the fallback is server-side


def test_a_line_with_only_models_is_served_by_its_first_listed_model(tmp_path: Path, sim: SimServer) -> None:
    job = make_job(tmp_path, sim, [line("only-models", models=["anthropic/claude-3.5-haiku", MINI], max_tokens=8)])

    assert run(job).exit_code == 0

    assert results(job)["only-models"]["model"] == "anthropic/claude-3.5-haiku"


# -- provider: routing preferences ----------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "preferences", "provider"),
    [
        (DEFAULT_MODEL, None, "Google"),
        (DEFAULT_MODEL, {"order": ["google-ai-studio", "google-vertex"]}, "Google AI Studio"),
        (DEFAULT_MODEL, {"only": ["google-ai-studio"]}, "Google AI Studio"),
        (DEFAULT_MODEL, {"ignore": ["google-vertex"]}, "Google AI Studio"),
        (MINI, {"order": ["azure"]}, "Azure"),
        (MINI, {"order": ["anthropic", "Azure"], "allow_fallbacks": False}, "Azure"),
        (MINI, {"order": ["anthropic"]}, "OpenAI"),  # fallbacks allowed: the default provider
        (MINI, {"only": ["openai", "azure"], "ignore": ["openai"], "sort": "price"}, "Azure"),
    ],
    ids=[
        "none", "order", "only", "ignore", "order-azure", "order-without-fallbacks",
        "order-unserved-falls-back", "only-minus-ignore",
    ],
)
def test_provider_preferences_choose_the_provider_that_serves(
    tmp_path: Path, sim: SimServer, model: str, preferences: dict[str, Any] | None, provider: str
) -> None:
    fields: dict[str, Any] = {"model": model, "max_tokens": 8}
    if preferences is not None:
        fields["provider"] = preferences
    row = line("routed", **fields)
    job = make_job(tmp_path, sim, [row])

    assert run(job).exit_code == 0

    record = results(job)["routed"]
    assert record["provider"] == provider
    assert record["response"]["body"]["provider"] == provider
    assert assert_billed_as_ledger(sim, record).provider == provider
    (received,) = sim.ledger.received.chats()
    assert canonical(received.body.get("provider")) == canonical(preferences)


@pytest.mark.parametrize(
    "preferences",
    [
        {"only": ["anthropic"]},
        {"ignore": ["google-vertex", "google-ai-studio"]},
        {"order": ["azure"], "allow_fallbacks": False},
    ],
    ids=["only", "ignore-all", "order-without-fallbacks"],
)
def test_provider_preferences_that_leave_nothing_are_a_404_sent_once(
    tmp_path: Path, sim: SimServer, preferences: dict[str, Any]
) -> None:
    job = make_job(tmp_path, sim, [line("nowhere", max_tokens=8)], toml_table("params", {"provider": preferences}))

    result = run(job)

    assert result.exit_code != 0
    assert results(job) == {}
    record = errors(job)["nowhere"]
    assert record["error"]["status"] == 404 and record["attempts"] == 1
    assert "No allowed providers" in record["error"]["message"]
    available = record["response"]["body"]["error"]["metadata"]["available_providers"]
    assert available == ["google-vertex", "google-ai-studio"]
    assert sim.ledger.counts()["generations"] == 0
    assert sim.ledger.counts()["rejections"] == {"404": 1}


def test_one_lines_unservable_provider_preferences_do_not_stop_the_other_lines(
    tmp_path: Path, sim: SimServer
) -> None:
    rows = [line("nowhere", max_tokens=8, provider={"only": ["anthropic"]})]
    rows += [line(f"fine{i}", max_tokens=8) for i in range(3)]
    job = make_job(tmp_path, sim, rows, "[limits]\nconcurrency = 1\n")

    result = run(job)

    assert set(results(job)) == {"fine0", "fine1", "fine2"}
    assert result.exit_code == 1


# -- reasoning --------------------------------------------------------------------------------


def test_reasoning_effort_and_budget_are_honoured_and_billed(tmp_path: Path, sim: SimServer) -> None:
    cases = {
        "high": {"effort": "high"},
        "low": {"effort": "low"},
        "budget": {"max_tokens": 40},
        "off": {"effort": "none"},
    }
    rows = [line(name, model=R1, max_tokens=400, reasoning=spec) for name, spec in cases.items()]
    job = make_job(tmp_path, sim, rows)

    assert run(job).exit_code == 0

    records = results(job)
    tokens = {}
    for name, record in records.items():
        entry = assert_billed_as_ledger(sim, record)
        assert record["usage"]["reasoning_tokens"] == entry.reasoning_tokens
        usage = record["response"]["body"]["usage"]
        assert usage["completion_tokens_details"]["reasoning_tokens"] == entry.reasoning_tokens
        assert entry.completion_tokens >= entry.reasoning_tokens
        tokens[name] = entry.reasoning_tokens
        reasoning = message(record)["reasoning"]
        assert (isinstance(reasoning, str) and reasoning) if entry.reasoning_tokens else reasoning is None
    assert tokens["budget"] == 40
    assert tokens["high"] > tokens["low"] > 0 == tokens["off"]
    sent = received_by_prompt(sim)
    for row in rows:
        assert canonical(sent[row["prompt"]].body["reasoning"]) == canonical(row["reasoning"])


# -- parameters pass through: per line, from [params], and who wins ------------------------

SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["yes", "no"]}, "score": {"type": "integer"}},
    "required": ["label", "score"],
    "additionalProperties": False,
}
# Every value TOML can also write (no null), so the same features can come from [params].
FEATURES: dict[str, Any] = {
    "seed": 987654321,
    "stop": ["###", "§END"],
    "top_p": 0.85,
    "temperature": 0.3,
    "frequency_penalty": 0.0,
    "top_k": 40,
    "min_p": 0.05,
    "user": 'user-ünï "42" \\ tab\there',
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "verdict", "strict": True, "schema": SCHEMA},
    },
    "provider": {"require_parameters": True, "data_collection": "deny", "sort": "price"},
    "plugins": [{"id": "context-compression"}],
    "transforms": ["middle-out"],
    "session_id": "sess-7f3a-Ω",
    "x_future_option": {"nested": [1, 2.5, True, "deux"], "empty": {}},
}


def test_features_set_per_line_arrive_unchanged(tmp_path: Path, sim: SimServer) -> None:
    row = line("features", max_tokens=32, **FEATURES)
    job = make_job(tmp_path, sim, [row])

    assert run(job).exit_code == 0

    (received,) = sim.ledger.received.chats()
    expected = {
        "model": DEFAULT_MODEL,
        **{k: v for k, v in row.items() if k not in ("custom_id", "prompt")},
        "messages": [{"role": "user", "content": row["prompt"]}],
    }
    assert canonical(received.body) == canonical(expected)  # nothing added, dropped or changed
    record = results(job)["features"]
    assert record["parsed"]["label"] in ("yes", "no") and isinstance(record["parsed"]["score"], int)
    assert_billed_as_ledger(sim, record)


def test_features_set_in_params_arrive_unchanged(tmp_path: Path, sim: SimServer) -> None:
    rows = [line("a"), line("b")]
    params = {**FEATURES, "max_tokens": 32}
    job = make_job(tmp_path, sim, rows, toml_table("params", params))

    assert run(job).exit_code == 0

    sent = received_by_prompt(sim)
    for row in rows:
        expected = {"model": DEFAULT_MODEL, **params, "messages": [{"role": "user", "content": row["prompt"]}]}
        assert canonical(sent[row["prompt"]].body) == canonical(expected)
    assert set(results(job)) == {"a", "b"}


def test_a_line_wins_over_params_key_by_key_and_replaces_nested_values_whole(
    tmp_path: Path, sim: SimServer
) -> None:
    params = {"temperature": 0.2, "seed": 7, "user": "job-user", "max_tokens": 16, "provider": {"order": ["azure"]}}
    own = line("own", temperature=0.9, provider={"order": ["openai"]})
    inherits = line("inherits")
    job = make_job(tmp_path, sim, [own, inherits], f'model = "{MINI}"\n' + toml_table("params", params))

    assert run(job).exit_code == 0

    sent = received_by_prompt(sim)
    own_body, inherited_body = sent[own["prompt"]].body, sent[inherits["prompt"]].body
    assert canonical(own_body["provider"]) == canonical({"order": ["openai"]})  # not merged
    assert own_body["temperature"] == 0.9
    assert (own_body["seed"], own_body["user"], own_body["max_tokens"]) == (7, "job-user", 16)
    assert canonical({k: inherited_body[k] for k in params}) == canonical(params)
    records = results(job)
    assert records["own"]["provider"] == "OpenAI"
    assert records["inherits"]["provider"] == "Azure"


def test_cli_param_flags_sit_between_params_and_the_line(tmp_path: Path, sim: SimServer) -> None:
    own = line("own", temperature=0.9)
    inherits = line("inherits")
    params = toml_table("params", {"temperature": 0.2, "seed": 7, "max_tokens": 16})
    job = make_job(tmp_path, sim, [own, inherits], params)

    done = run_cli("run", job, "--no-progress", "-p", "temperature=0.5", "-p", 'user="cli"')

    assert done.returncode == 0, done.stderr
    sent = received_by_prompt(sim)
    assert sent[own["prompt"]].body["temperature"] == 0.9
    inherited = sent[inherits["prompt"]].body
    assert (inherited["temperature"], inherited["seed"], inherited["user"]) == (0.5, 7, "cli")
    assert set(results(job)) == {"own", "inherits"}


# -- parameters that change the reply ------------------------------------------------------


def test_stop_cuts_the_reply_at_the_stop_string(tmp_path: Path, sim: SimServer) -> None:
    plain = make_job(tmp_path / "plain", sim, [line("s", max_tokens=64)])
    assert run(plain).exit_code == 0
    full = message(results(plain)["s"])["content"]
    stop = " " + full.split(" ")[3]  # a word from the middle of the reply
    cut = full[: full.index(stop)]

    stopped = make_job(tmp_path / "stopped", sim, [line("s", max_tokens=64, stop=[stop, "never-there"])])
    assert run(stopped).exit_code == 0

    record = results(stopped)["s"]
    assert message(record)["content"] == cut
    assert record["response"]["body"]["choices"][0]["finish_reason"] == "stop"
    assert record["usage"]["completion_tokens"] < results(plain)["s"]["usage"]["completion_tokens"]
    assert_billed_as_ledger(sim, record)
    assert sim.ledger.received.chats()[-1].body["stop"] == [stop, "never-there"]


def test_tools_and_tool_choice_give_a_tool_call(tmp_path: Path, sim: SimServer) -> None:
    tools = [
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                    "required": ["city", "days"],
                },
            },
        },
    ]
    choice = {"type": "function", "function": {"name": "get_weather"}}
    job = make_job(tmp_path, sim, [line("tool", model=MINI, max_tokens=64, tools=tools, tool_choice=choice)])

    assert run(job).exit_code == 0

    record = results(job)["tool"]
    choice0 = record["response"]["body"]["choices"][0]
    assert choice0["finish_reason"] == "tool_calls"
    (call,) = choice0["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"  # tool_choice honoured, not the first tool
    arguments = orjson.loads(call["function"]["arguments"])
    assert isinstance(arguments["city"], str) and 1 <= arguments["days"] <= 7
    assert_billed_as_ledger(sim, record)
    (received,) = sim.ledger.received.chats()
    assert canonical(received.body["tools"]) == canonical(tools)
    assert canonical(received.body["tool_choice"]) == canonical(choice)


def test_response_format_json_object_gives_a_json_reply(tmp_path: Path, sim: SimServer) -> None:
    fmt = {"type": "json_object"}
    job = make_job(tmp_path, sim, [line("json", max_tokens=64, response_format=fmt)])

    assert run(job).exit_code == 0

    assert isinstance(orjson.loads(message(results(job)["json"])["content"]), dict)
    assert sim.ledger.received.chats()[0].body["response_format"] == fmt


# -- attribution headers and the key ----------------------------------------------------------

HEADERS = {
    "HTTP-Referer": "https://example.org/my-batch-app",
    "X-OpenRouter-Title": "My Batch App",
    "X-Title": "My Batch App (legacy header)",
    "X-Trace-Id": "trace-4f1c",
}


def test_job_headers_and_the_bearer_key_arrive(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(api_keys=frozenset({KEY}))  # any other key, or none, is a 401
    job = make_job(tmp_path, sim, [line("h", max_tokens=8)], toml_table("headers", HEADERS))

    result = run(job)

    assert result.exit_code == 0, result.message
    (received,) = sim.ledger.received.chats()
    for name, value in HEADERS.items():
        assert received.header(name) == value, name  # a second value would show as "a, b"
    assert received.auth_scheme == "Bearer"
    assert received.header("Authorization") is None  # never kept
    over_http = _get(sim, "/_sim/requests")
    assert KEY.encode() not in over_http
    (logged,) = [r for r in orjson.loads(over_http)["requests"] if r["path"].endswith("/chat/completions")]
    assert logged["headers"]["X-Trace-Id"] == "trace-4f1c" and logged["auth_scheme"] == "Bearer"
    assert canonical(logged["body"]) == canonical(received.body)
    _post(sim, "/_sim/reset")
    assert sim.ledger.received.entries() == []


def test_a_wrong_key_is_refused_so_the_key_check_can_fail(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(api_keys=frozenset({KEY}))
    job = make_job(tmp_path, sim, [line("h", max_tokens=8)])

    result = run(job, key="sk-or-some-other-key")

    assert result.exit_code == 3
    # GET /key refuses it first, so no chat request is sent at all.
    assert sim.ledger.counts()["rejections"] == {"401": 1}
    assert sim.ledger.received.chats() == []
    assert [r.path for r in sim.ledger.received.entries()] == ["/api/v1/models", "/api/v1/key"]


def test_header_names_in_another_case_replace_the_defaults(tmp_path: Path, sim: SimServer) -> None:
    headers = {"http-referer": "https://example.org/lower", "x-title": "lower"}
    job = make_job(tmp_path, sim, [line("h", max_tokens=8)], toml_table("headers", headers))

    assert run(job).exit_code == 0

    (received,) = sim.ledger.received.chats()
    assert received.header("HTTP-Referer") == "https://example.org/lower"
    assert received.header("X-Title") == "lower"


_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def _get(sim: SimServer, path: str) -> bytes:
    with _LOOPBACK.open(sim.root_url + path, timeout=10) as response:
        return response.read()


def _post(sim: SimServer, path: str) -> bytes:
    with _LOOPBACK.open(urllib.request.Request(sim.root_url + path, b"", method="POST"), timeout=10) as response:
        return response.read()
