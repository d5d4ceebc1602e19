"""The simulator over real loopback HTTP: shapes, billing, faults, limits, streaming, processes."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from simclient import Answer, call, calls, user

from batchrun.sim import CATALOG, DEFAULT_MODEL, SimConfig, SimProcess, SimServer, serve
from batchrun.sim.replies import prompt_key

GEN_ID = re.compile(r"^gen-\d{10}-[A-Za-z0-9]{20}$")
LABEL_PROMPT = "Sentiment of this review (positive/negative/neutral): the soup was cold"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(retry_after_s=0.05, hang_s=5.0)) as server:
        yield server


@pytest.fixture
def fresh() -> Iterator[SimServer]:
    with SimServer(SimConfig(retry_after_s=0.05, hang_s=5.0)) as server:
        yield server


# -- success shape and billing --------------------------------------------------------------


def test_success_shape_and_cost(sim: SimServer) -> None:
    ans = call(sim.base_url, user(LABEL_PROMPT, max_tokens=16))
    assert ans.status == 200
    doc = ans.json()
    assert GEN_ID.match(doc["id"])
    assert ans.headers["X-Generation-Id"] == doc["id"]
    assert doc["object"] == "chat.completion"
    assert doc["model"] == DEFAULT_MODEL
    assert doc["provider"] == "Google"
    assert "system_fingerprint" in doc
    (choice,) = doc["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None
    assert (choice["finish_reason"], choice["native_finish_reason"]) == ("stop", "STOP")
    msg = choice["message"]
    assert msg["role"] == "assistant" and msg["refusal"] is None and msg["reasoning"] is None
    assert msg["content"] in ("positive", "negative", "neutral")
    u = doc["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert abs(u["cost"] - (u["prompt_tokens"] * 7.5e-8 + u["completion_tokens"] * 3e-7)) < 1e-12
    assert u["is_byok"] is False
    assert u["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert u["completion_tokens_details"] == {"reasoning_tokens": 0, "image_tokens": 0}
    cd = u["cost_details"]
    assert cd["upstream_inference_cost"] is None
    assert cd["upstream_inference_prompt_cost"] + cd["upstream_inference_completions_cost"] == (
        pytest.approx(u["cost"], abs=1e-15)
    )


def test_same_body_same_reply_and_unique_ids(sim: SimServer) -> None:
    body = user("Write one sentence about queues.")
    a, b = calls(sim.base_url, [body, body])
    assert a.json()["choices"][0]["message"] == b.json()["choices"][0]["message"]
    assert a.json()["usage"] == b.json()["usage"]
    assert a.json()["id"] != b.json()["id"]


def test_summary_is_short_and_uses_input_words(sim: SimServer) -> None:
    text = "Please summarize: the harbour workers unloaded crates of oranges during the storm."
    content = call(sim.base_url, user(text)).json()["choices"][0]["message"]["content"]
    assert 1 <= content.count(".") <= 3
    words = {w.lower().strip(".") for w in content.split()}
    assert words <= {w.lower().strip(".:") for w in text.split()} | {"summarize"}


def test_v1_prefix_and_models_fallback(sim: SimServer) -> None:
    body = user("hello", models=["nope/not-a-model", "openai/gpt-4o-mini"])
    doc = call(sim.root_url + "/v1", body).json()
    assert doc["model"] == "openai/gpt-4o-mini" and doc["provider"] == "OpenAI"
    u = doc["usage"]
    assert u["cost"] == pytest.approx(u["prompt_tokens"] * 1.5e-7 + u["completion_tokens"] * 6e-7)


@pytest.mark.parametrize(
    ("key", "api_keys", "status", "message"),
    [
        (None, None, 401, "No auth credentials found"),
        ("", None, 401, "No auth credentials found"),
        ("sk-wrong", frozenset({"sk-good"}), 401, "User not found."),
        ("sk-good", frozenset({"sk-good"}), 200, None),
    ],
)
def test_auth(key: str | None, api_keys: frozenset[str] | None, status: int, message: str) -> None:
    with SimServer(SimConfig(api_keys=api_keys)) as server:
        ans = call(server.base_url, user("hi"), key=key)
        assert ans.status == status
        if message:
            assert ans.json()["error"] == {"code": 401, "message": message}
            assert server.ledger.counts()["rejections"] == {"401": 1}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "Invalid JSON"),
        ([1, 2], "JSON object"),
        ({"model": DEFAULT_MODEL}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({"messages": [{"role": "user", "content": 3}]}, "content"),
        (user("x", max_tokens=0), "max_tokens"),
        (user("x", model="openai/gpt-4o-mini", max_tokens=200_000), "maximum context length"),
    ],
)
def test_bad_requests(sim: SimServer, body: Any, needle: str) -> None:
    ans = call(sim.base_url, body)
    assert ans.status == 400
    assert needle in ans.json()["error"]["message"]


@pytest.mark.parametrize(
    ("model", "status", "message", "code"),
    [
        ("acme/nope", 400, "acme/nope is not a valid model ID", "model_not_found"),
        (
            "google/gemini-1.5-flash",
            404,
            "No endpoints found for google/gemini-1.5-flash.",
            "model_deprecated",
        ),
    ],
)
def test_unavailable_models(
    sim: SimServer, model: str, status: int, message: str, code: str
) -> None:
    ans = call(sim.base_url, user("hi", model=model))
    assert ans.status == status
    err = ans.json()["error"]
    assert err["code"] == status and err["message"] == message
    availability = err["metadata"]["availability"]
    assert availability["code"] == code and availability["retryable"] is False
    assert availability["fallback_models"] == ["google/gemini-2.0-flash-lite-001"]


def test_models_pricing_strings(sim: SimServer) -> None:
    data = {m["id"]: m for m in call(sim.base_url, path="/models", method="GET").json()["data"]}
    flash = data[DEFAULT_MODEL]
    assert flash["context_length"] == 1_048_576
    assert flash["pricing"]["prompt"] == "0.000000075"
    assert flash["pricing"]["completion"] == "0.0000003"
    assert flash["pricing"]["input_cache_read"] == "0.00000001875"
    assert flash["pricing"]["request"] == "0" and flash["pricing"]["internal_reasoning"] == "0"
    assert {"architecture", "top_provider", "created", "name"} <= set(flash)
    assert data["meta-llama/llama-3.1-8b-instruct:free"]["pricing"]["prompt"] == "0"
    assert "google/gemini-1.5-flash" not in data
    assert CATALOG["anthropic/claude-3.5-haiku"].completion_price == pytest.approx(4e-6)


@pytest.mark.parametrize("path", ["/key", "/auth/key"])
def test_key_reports_billed_usage(path: str) -> None:
    with SimServer(SimConfig(key_limit_usd=2.0)) as server:
        call(server.base_url, user("hi"))
        data = call(server.base_url, path=path, method="GET").json()["data"]
        billed = server.ledger.billed_total_usd()
        assert billed > 0
        assert data["usage"] == pytest.approx(billed)
        assert data["limit"] == 2.0 and data["limit_remaining"] == pytest.approx(2.0 - billed)
        assert data["rate_limit"] == {"requests": -1, "interval": "10s", "note": "deprecated"}
        assert data["is_free_tier"] is False and data["limit_reset"] is None
        assert call(server.base_url, path=path, method="GET", key=None).status == 401


# -- reply shapes ---------------------------------------------------------------------------

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string"}},
        "spam": {"type": "boolean"},
        "extra": {"$ref": "#/$defs/extra"},
    },
    "required": ["label", "score", "stars", "tags", "spam", "extra"],
    "additionalProperties": False,
    "$defs": {"extra": {"type": "object", "properties": {"note": {"type": ["string", "null"]}}}},
}


def test_json_schema_reply_conforms(sim: SimServer) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "r", "strict": True, "schema": SCHEMA}}
    content = call(sim.base_url, user(LABEL_PROMPT, response_format=fmt)).json()["choices"][0][
        "message"
    ]["content"]
    value = orjson.loads(content)
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - optional
        assert set(SCHEMA["required"]) <= set(value)
    else:
        jsonschema.validate(value, SCHEMA)


def test_json_object_tools_stop_and_length(sim: SimServer) -> None:
    doc = call(sim.base_url, user(LABEL_PROMPT, response_format={"type": "json_object"})).json()
    assert isinstance(orjson.loads(doc["choices"][0]["message"]["content"]), dict)

    tool = {
        "type": "function",
        "function": {
            "name": "record",
            "parameters": {
                "type": "object",
                "properties": {"label": {"type": "string"}},
                "required": ["label"],
            },
        },
    }
    choice = call(sim.base_url, user("classify", tools=[tool])).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (tc,) = choice["message"]["tool_calls"]
    assert tc["function"]["name"] == "record" and "label" in orjson.loads(
        tc["function"]["arguments"]
    )
    none = call(sim.base_url, user("classify", tools=[tool], tool_choice="none")).json()
    assert "tool_calls" not in none["choices"][0]["message"]

    full = call(sim.base_url, user("Tell me about queues")).json()["choices"][0]["message"][
        "content"
    ]
    word = full.split()[2]
    cut = call(sim.base_url, user("Tell me about queues", stop=[word])).json()
    assert cut["choices"][0]["message"]["content"] == full[: full.find(word)]

    short = call(sim.base_url, user("Tell me about queues", max_tokens=2)).json()
    assert short["choices"][0]["finish_reason"] == "length"
    assert short["choices"][0]["native_finish_reason"] == "MAX_TOKENS"
    assert short["usage"]["completion_tokens"] == 2


def test_reasoning_tokens_are_billed_as_completion(sim: SimServer) -> None:
    body = user("why?", model="deepseek/deepseek-r1", reasoning={"effort": "low"})
    doc = call(sim.base_url, body).json()
    u = doc["usage"]
    reasoning = u["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning > 0 and u["completion_tokens"] > reasoning
    assert doc["choices"][0]["message"]["reasoning"]
    assert u["cost"] == pytest.approx(u["prompt_tokens"] * 4e-7 + u["completion_tokens"] * 2e-6)
    plain = call(sim.base_url, user("why?", model="deepseek/deepseek-r1")).json()["usage"]
    assert plain["completion_tokens_details"]["reasoning_tokens"] == 0


# -- faults ---------------------------------------------------------------------------------


def _err(ans: Answer) -> dict[str, Any]:
    err: dict[str, Any] = ans.json()["error"]
    return err


def _check_429(ans: Answer) -> None:
    assert ans.headers["Retry-After"] == "0.05"
    err = _err(ans)
    assert "temporarily rate-limited upstream" in err["message"]
    assert err["metadata"]["limit_source"] == "upstream_provider_shared_pool"


def _check_502(ans: Answer) -> None:
    err = _err(ans)
    assert err["message"] == "Provider returned error"
    assert isinstance(orjson.loads(err["metadata"]["raw"]), dict)


def _check_html(ans: Answer) -> None:
    assert ans.headers["Content-Type"].startswith("text/html")
    assert b"<html" in ans.raw


def _check_moderation(ans: Answer) -> None:
    meta = _err(ans)["metadata"]
    assert meta["reasons"] and meta["flagged_input"] == "hello there"
    assert meta["model_slug"] == DEFAULT_MODEL and meta["provider_name"] == "Google"


def _check_error200(ans: Answer) -> None:
    doc = ans.json()
    assert "choices" not in doc and doc["error"]["code"] == 502 and doc["user_id"]


def _check_finish_error(ans: Answer) -> None:
    (choice,) = ans.json()["choices"]
    assert choice["finish_reason"] == "error"
    assert choice["error"]["metadata"]["error_type"]
    assert isinstance(choice["message"]["content"], str)


def _check_empty(ans: Answer) -> None:
    doc = ans.json()
    assert doc["choices"] == [] and doc["usage"]["completion_tokens"] == 0


def _check_whitespace(ans: Answer) -> None:
    assert ans.raw.startswith(b"\n\n   \n")
    assert ans.json()["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("kind", "status", "check"),
    [
        ("429", 429, _check_429),
        ("500", 500, None),
        ("502", 502, _check_502),
        ("503", 503, lambda a: a.headers["Retry-After"] == "0.05" or pytest.fail("no hint")),
        ("504", 504, None),
        ("524", 524, None),
        ("html502", 502, _check_html),
        (
            "inflight402",
            402,
            lambda a: (
                (
                    _err(a)["metadata"]["limit_source"] == "openrouter_in_flight_budget"
                    and a.headers["Retry-After"] == "0.05"
                )
                or pytest.fail("bad 402")
            ),
        ),
        (
            "credits402",
            402,
            lambda a: "Insufficient credits" in _err(a)["message"] or pytest.fail("bad 402"),
        ),
        ("moderation403", 403, _check_moderation),
        ("auth401", 401, lambda a: _err(a)["message"] == "User not found." or pytest.fail("401")),
        ("error200", 200, _check_error200),
        ("finish_error", 200, _check_finish_error),
        ("empty_choices", 200, _check_empty),
        ("whitespace", 200, _check_whitespace),
    ],
)
def test_fault_wire_shapes(sim: SimServer, kind: str, status: int, check: Any) -> None:
    ans = call(sim.base_url, user("hello there"), fault=kind)
    assert ans.status == status
    if ans.headers.get("Content-Type", "").startswith("application/json"):
        err = ans.json().get("error")
        if err is not None and status != 200:
            assert err["code"] == status
    if check is not None:
        check(ans)


@pytest.mark.parametrize(
    ("kind", "exc"),
    [
        ("drop", aiohttp.ServerDisconnectedError),
        ("torn", aiohttp.ClientPayloadError),
        ("hang", asyncio.TimeoutError),
    ],
)
def test_transport_faults_are_billed(fresh: SimServer, kind: str, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        call(fresh.base_url, user("hello"), fault=kind, timeout=0.5)
    (entry,) = fresh.ledger.entries()
    assert entry.outcome == kind and entry.billed


def test_marker_fails_first_n_attempts_then_succeeds(fresh: SimServer) -> None:
    body = user("label this [[sim:500*2]] please")
    statuses = [call(fresh.base_url, body).status for _ in range(4)]
    assert statuses == [500, 500, 200, 200]
    always = [call(fresh.base_url, user("x [[sim:503]]")).status for _ in range(3)]
    assert always == [503, 503, 503]
    assert call(fresh.base_url, user("[[sim:bogus]] is just text")).status == 200
    counts = fresh.ledger.counts()
    assert counts["rejections"] == {"500": 2, "503": 3}
    assert (
        counts["billed"] == 3 and fresh.ledger.billed_by_prompt()[prompt_key(body["messages"])] == 2
    )


def test_fault_rates_are_seeded() -> None:
    def run() -> list[int]:
        with SimServer(SimConfig(faults={"500": 0.5}, seed=7)) as server:
            return [call(server.base_url, user(f"n{i}")).status for i in range(12)]

    first = run()
    assert first == run()
    assert set(first) == {200, 500}


def test_ledger_billing_flags_and_endpoint(fresh: SimServer) -> None:
    ok = call(fresh.base_url, user("a")).json()
    call(fresh.base_url, user("b"), fault="finish_error")
    call(fresh.base_url, user("c"), fault="empty_choices")
    call(fresh.base_url, user("a"))
    call(fresh.base_url, user("d"), fault="500")
    ledger = fresh.ledger
    outcomes = [(e.outcome, e.billed) for e in ledger.entries()]
    assert outcomes == [
        ("ok", True),
        ("finish_error", False),
        ("empty_choices", False),
        ("ok", True),
    ]
    assert ledger.billed_by_prompt() == {prompt_key(user("a")["messages"]): 2}
    entry = ledger.by_gen_id(ok["id"])
    assert entry is not None and entry.cost == pytest.approx(ok["usage"]["cost"])
    assert ledger.billed_total_usd() == pytest.approx(2 * ok["usage"]["cost"])
    remote = call(fresh.root_url, path="/_sim/ledger", method="GET").json()
    assert remote["counts"]["billed"] == 2 and remote["counts"]["rejections"] == {"500": 1}
    assert len(remote["entries"]) == 4
    gen = call(fresh.base_url, path=f"/generation?id={ok['id']}", method="GET").json()["data"]
    assert gen["total_cost"] == pytest.approx(ok["usage"]["cost"])
    call(fresh.root_url, path="/_sim/reset")
    assert ledger.entries() == [] and ledger.billed_total_usd() == 0


def test_credits_run_out() -> None:
    with SimServer(SimConfig(credits_usd=1e-5)) as server:
        statuses = [call(server.base_url, user(f"q{i}", max_tokens=8)).status for i in range(6)]
        assert statuses[0] == 200 and statuses[-1] == 402
        assert server.ledger.billed_total_usd() >= 1e-5 or statuses.count(402) > 0


# -- rate limits ----------------------------------------------------------------------------


def test_rpm_sliding_window() -> None:
    with SimServer(SimConfig(rpm=600, rate_window_s=1.0)) as server:
        answers = calls(server.base_url, [user(f"r{i}") for i in range(15)])
        ok = [a for a in answers if a.status == 200]
        limited = [a for a in answers if a.status == 429]
        assert (len(ok), len(limited)) == (10, 5)
        a = limited[0]
        now_ms = time.time() * 1000
        reset = int(a.headers["X-RateLimit-Reset"])
        assert now_ms - 100 < reset < now_ms + 1100
        assert a.headers["X-RateLimit-Limit"] == "10" and a.headers["X-RateLimit-Remaining"] == "0"
        assert 0 < float(a.headers["Retry-After"]) <= 1.0
        err = a.json()["error"]
        assert err["message"].startswith("Rate limit exceeded: limit_rpm/")
        assert err["metadata"]["headers"]["X-RateLimit-Reset"] == a.headers["X-RateLimit-Reset"]
        assert a.json()["user_id"]
        time.sleep(float(a.headers["Retry-After"]) + 0.02)
        assert call(server.base_url, user("later")).status == 200
        counts = server.ledger.counts()
        assert counts["rate_limited"] == 5 and counts["rejections"] == {"429": 5}
        assert counts["generations"] == 11
        assert server.ledger.max_accepted_in_window(1.0) <= 10
        assert sum(server.ledger.accepted_per_second().values()) == 11


def test_tpm_limit() -> None:
    with SimServer(SimConfig(tpm=60 * 40, rate_window_s=1.0)) as server:
        body = user("x" * 80)  # ~23 prompt tokens plus a short reply: two do not fit in 40
        first, second = calls(server.base_url, [body, user("y" * 80)])
        assert sorted([first.status, second.status]) == [200, 429]
        limited = first if first.status == 429 else second
        assert "limit_tpm" in limited.json()["error"]["message"]


# -- streaming ------------------------------------------------------------------------------


def _sse_events(raw: bytes) -> tuple[list[str], list[Any]]:
    comments, data = [], []
    for line in raw.decode().split("\n"):
        if line.startswith(":"):
            comments.append(line)
        elif line.startswith("data: "):
            payload = line[6:]
            data.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return comments, data


def test_stream_shape(sim: SimServer) -> None:
    body = user("Tell me a story about a careful queue")
    plain = call(sim.base_url, body).json()
    ans = call(sim.base_url, {**body, "stream": True})
    assert ans.headers["Content-Type"].startswith("text/event-stream")
    assert ans.raw.startswith(b": OPENROUTER PROCESSING\n\n")
    comments, data = _sse_events(ans.raw)
    assert comments and data[-1] == "[DONE]"
    usage_chunk = data[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["cost"] > 0
    chunks = data[:-2]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert {c["id"] for c in data[:-1]} == {ans.headers["X-Generation-Id"]}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert usage_chunk["usage"]["completion_tokens"] == plain["usage"]["completion_tokens"]


@pytest.mark.parametrize("kind", ["finish_error", "error200"])
def test_stream_mid_error(fresh: SimServer, kind: str) -> None:
    ans = call(fresh.base_url, user("Tell me a long story about queues", stream=True), fault=kind)
    assert ans.status == 200
    _, data = _sse_events(ans.raw)
    assert "[DONE]" not in data
    last = data[-1]
    assert last["error"]["code"] == 502 and last["choices"][0]["finish_reason"] == "error"
    assert any(c["choices"][0]["delta"].get("content") for c in data[:-1])
    (entry,) = fresh.ledger.entries()
    assert entry.streamed and not entry.billed


def test_stream_torn_is_payload_error(fresh: SimServer) -> None:
    with pytest.raises(aiohttp.ClientPayloadError):
        call(fresh.base_url, user("Tell me a long story", stream=True), fault="torn")
    assert fresh.ledger.entries()[0].billed


# -- dialects -------------------------------------------------------------------------------


def test_openai_dialect() -> None:
    with SimServer(SimConfig(dialect="openai", rpm=60)) as server:
        ans = call(server.base_url, user("hi", max_completion_tokens=5))
        assert ans.status == 200
        doc = ans.json()
        assert "cost" not in doc["usage"] and "provider" not in doc
        assert ans.headers["x-ratelimit-limit-requests"] == "60"
        assert ans.headers["x-ratelimit-remaining-requests"] == "59"
        assert re.fullmatch(r"(\d+m)?[\d.]+m?s", ans.headers["x-ratelimit-reset-requests"])
        assert "x-ratelimit-reset-tokens" in ans.headers
        err = call(server.base_url, user("hi"), key=None).json()["error"]
        assert isinstance(err["code"], str) and err["type"]


def test_plain_dialect_needs_no_key() -> None:
    with SimServer(SimConfig(dialect="plain")) as server:
        doc = call(server.base_url, user("hi"), key=None).json()
        assert "provider" not in doc and "cost" not in doc["usage"]


# -- running it -----------------------------------------------------------------------------


def test_serve_inside_a_running_loop() -> None:
    async def main() -> int:
        headers = {"Authorization": "Bearer k"}
        async with serve(SimConfig()) as handle, aiohttp.ClientSession(headers=headers) as session:
            resp = await session.post(handle.base_url + "/chat/completions", json=user("hi"))
            await resp.read()
            resp.release()
            assert len(handle.ledger.entries()) == 1
            return resp.status

    assert asyncio.run(main()) == 200


def test_sim_process() -> None:
    with SimProcess(["--fault", "500=1.0", "--retry-after", "0.05"]) as proc:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/v1", proc.base_url)
        ans = call(proc.base_url, user("hi"))
        assert ans.status == 500
        assert proc.ledger_json()["counts"]["rejections"] == {"500": 1}
    assert proc.returncode == 0  # SIGTERM is a clean stop


def test_sim_process_bad_flag() -> None:
    with pytest.raises(RuntimeError, match="unknown kind"):
        SimProcess(["--fault", "nope=0.1"]).start()


def test_latency_is_applied_and_a_timeout_is_still_billed() -> None:
    with SimServer(SimConfig(latency_s=0.3)) as server:
        with pytest.raises(asyncio.TimeoutError):
            call(server.base_url, user("slow"), timeout=0.1)
        start = time.monotonic()
        assert call(server.base_url, user("slow")).status == 200
        assert time.monotonic() - start >= 0.3
        assert [e.billed for e in server.ledger.entries()] == [True, True]


def test_openai_dialect_rate_limit_body() -> None:
    with SimServer(SimConfig(dialect="openai", rpm=60, rate_window_s=1.0)) as server:
        assert call(server.base_url, user("a")).status == 200
        ans = call(server.base_url, user("b"))
        assert ans.status == 429
        err = ans.json()["error"]
        assert err["code"] == "rate_limit_exceeded" and err["type"] == "requests"
        assert ans.headers["x-ratelimit-remaining-requests"] == "0"
        assert ans.headers["X-RateLimit-Reset"].isdigit()
