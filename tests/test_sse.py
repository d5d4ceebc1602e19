"""Streaming: SSE bytes cut anywhere are assembled into the body a non-streamed request gets."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
import orjson
import pytest

from batchrun.sse import StreamAssembler

KEEPALIVE = b": OPENROUTER PROCESSING\n\n"
HEAD = {"id": "gen-1-abc", "provider": "Google", "model": "google/gemini-2.0-flash-lite-001",
        "object": "chat.completion.chunk", "created": 1700000000}
USAGE = {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14, "cost": 0.0000021}


def event(doc: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def delta(finish: str | None = None, **fields: Any) -> bytes:
    return event({**HEAD, "choices": [{"index": 0, "delta": fields, "finish_reason": finish}]})


def usage_chunk(shape: str) -> bytes:
    doc: dict[str, Any] = {**HEAD, "usage": USAGE}
    if shape == "empty":
        doc["choices"] = []
    elif shape == "null-finish":
        doc["choices"] = [{"index": 0, "delta": {"content": ""}, "finish_reason": None}]
    return event(doc)


DONE = b"data: [DONE]\n\n"
AUTH = {"Authorization": "Bearer sk-or-test"}
TEXT = [delta(role="assistant", content="The "), KEEPALIVE, delta(content="answer "),
        delta(content="is 42."), delta("stop", content="")]


def assemble(stream: bytes, sizes: Any = None, crlf: bool = False) -> StreamAssembler:
    if crlf:
        stream = stream.replace(b"\n", b"\r\n")
    assembler = StreamAssembler(clock=lambda: 0.0, started=0.0)
    position = 0
    rng = random.Random(7)
    while position < len(stream):
        size = sizes if isinstance(sizes, int) else rng.randint(1, 40) if sizes == "random" else len(stream)
        assembler.feed(stream[position:position + size])
        position += size
    return assembler


SPLITS = [None, 1, 3, "random"]


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
@pytest.mark.parametrize("sizes", SPLITS, ids=["whole", "bytes", "threes", "random"])
@pytest.mark.parametrize("shape", ["empty", "missing", "null-finish"])
def test_text_stream_is_one_body_wherever_it_is_cut(sizes: Any, crlf: bool, shape: str) -> None:
    stream = KEEPALIVE + b"".join(TEXT) + usage_chunk(shape) + DONE
    body, error = assemble(stream, sizes, crlf).result()
    assert error is None
    assert body["id"] == "gen-1-abc"
    assert body["object"] == "chat.completion"
    assert body["model"] == "google/gemini-2.0-flash-lite-001"
    assert body["provider"] == "Google"
    assert body["created"] == 1700000000
    assert body["usage"] == USAGE
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "The answer is 42."}
    assert choice["finish_reason"] == "stop"


def test_utf8_split_inside_a_character_and_multi_line_data() -> None:
    stream = delta(content="café ☕") + b"data: {\"choices\": [{\"index\": 0,\ndata: \"delta\": {}, " \
        b"\"finish_reason\": \"stop\"}]}\n\n" + DONE
    body, error = assemble(stream, 1).result()
    assert error is None
    assert body["choices"][0]["message"]["content"] == "café ☕"


def test_reasoning_and_tool_calls_merge_by_index() -> None:
    stream = b"".join([
        delta(role="assistant", content="", reasoning="Let me "),
        delta(reasoning="think."),
        delta(tool_calls=[{"index": 0, "id": "call_1", "type": "function",
                           "function": {"name": "lookup", "arguments": ""}}]),
        delta(tool_calls=[{"index": 1, "id": "call_2", "type": "function",
                           "function": {"name": "get_", "arguments": "{\"q\":"}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": "{\"id\": "}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": "7}"}},
                          {"index": 1, "function": {"name": "time", "arguments": " 1}"}}]),
        delta("tool_calls"), usage_chunk("empty"), DONE,
    ])
    body, error = assemble(stream, "random").result()
    assert error is None
    message = body["choices"][0]["message"]
    assert message["reasoning"] == "Let me think."
    assert message["content"] == ""
    assert message["tool_calls"] == [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"id": 7}'}},
        {"index": 1, "id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": '{"q": 1}'}},
    ]
    assert body["choices"][0]["finish_reason"] == "tool_calls"


ERROR_CHUNK = {**HEAD, "error": {"code": 502, "message": "Provider returned error"},
               "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]}


@pytest.mark.parametrize(
    ("stream", "kind", "message"),
    [
        (TEXT[0] + event(ERROR_CHUNK), "server_error", "error in the stream (502): Provider returned error"),
        (TEXT[0] + event({**ERROR_CHUNK, "error": {"code": 429, "message": "slow down"}}),
         "rate_limited", "(429): slow down"),
        (TEXT[0] + event({**ERROR_CHUNK, "error": {"code": "server_error", "message": "boom"}}),
         "provider_error", "error in the stream: boom"),
        (TEXT[0] + delta("error"), "provider_error", "finish_reason 'error'"),
        (TEXT[0] + TEXT[2], "connection_error", "cut off before a finish_reason"),
        (TEXT[0] + TEXT[2] + b'data: {"choices": [{"index": 0, "del', "connection_error", "cut off"),
        (b"", "connection_error", "cut off"),
        (KEEPALIVE + usage_chunk("empty") + DONE, "provider_error", "ended with no choices"),
        (TEXT[0] + DONE, "provider_error", "ended with no finish_reason"),
        (b"".join(TEXT) + b"data: {not json}\n\n" + DONE, "provider_error", "not JSON"),
    ],
    ids=["error-502", "error-429", "error-text-code", "finish-error", "eof", "torn-event", "empty",
         "no-choices", "done-no-finish", "bad-event"],
)
@pytest.mark.parametrize("sizes", [None, 1], ids=["whole", "bytes"])
def test_failed_streams(stream: bytes, kind: str, message: str, sizes: Any) -> None:
    body, error = assemble(stream, sizes).result()
    assert error is not None
    assert error["kind"] == kind
    assert message in error["message"]
    assert isinstance(body, dict) and "choices" in body


def test_the_mid_stream_error_keeps_the_text_so_far_and_the_error() -> None:
    body, error = assemble(TEXT[0] + event(ERROR_CHUNK)).result()
    assert error is not None and error["status"] == 502
    assert body["choices"][0]["message"]["content"] == "The "
    assert body["error"]["code"] == 502


def test_a_finished_stream_without_done_or_usage_is_whole() -> None:
    body, error = assemble(b"".join(TEXT)).result()
    assert error is None
    assert "usage" not in body
    assert body["choices"][0]["message"]["content"] == "The answer is 42."


def test_a_last_event_without_its_blank_line_is_kept() -> None:
    body, error = assemble(b"".join(TEXT[:-1]) + TEXT[-1].rstrip(b"\n")).result()
    assert error is None and body["choices"][0]["finish_reason"] == "stop"


def test_anything_after_done_is_ignored() -> None:
    body, error = assemble(b"".join(TEXT) + DONE + delta(content="late")).result()
    assert error is None and body["choices"][0]["message"]["content"] == "The answer is 42."


def test_time_to_first_token_is_the_feed_that_brought_it() -> None:
    assembler = StreamAssembler(clock=lambda: 99.0, started=10.0)
    assembler.feed(KEEPALIVE, now=10.5)
    assembler.feed(delta(role="assistant", content=""), now=11.0)  # a role, no token yet
    assert assembler.ttft_s is None
    assembler.feed(delta(content="Hi")[:20], now=11.5)
    assembler.feed(delta(content="Hi")[20:], now=12.25)  # the event completes here
    assembler.feed(delta("stop", content=" there"), now=13.0)
    assert assembler.ttft_s == pytest.approx(2.25)
    assembler.feed(DONE)  # stamped by the clock
    assert assembler.done and assembler.ttft_s == pytest.approx(2.25)


def test_n_greater_than_one_keeps_each_choice() -> None:
    two = event({**HEAD, "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"},
                                     {"index": 1, "delta": {"content": "b"}, "finish_reason": "length"}]})
    body, error = assemble(two + DONE).result()
    assert error is None
    assert [c["message"]["content"] for c in body["choices"]] == ["a", "b"]
    assert [c["finish_reason"] for c in body["choices"]] == ["stop", "length"]


@pytest.mark.parametrize("options", [{}, {"reasoning": {"effort": "low"}}, {"tools": [
    {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}}}]}],
    ids=["text", "reasoning", "tools"])
def test_a_stream_from_the_simulator_equals_its_non_streamed_reply(sim, options: dict[str, Any]) -> None:
    model = "deepseek/deepseek-r1" if "reasoning" in options else "google/gemini-2.0-flash-lite-001"
    request = {"model": model, "max_tokens": 200, **options,
               "messages": [{"role": "user", "content": "Write one line about queues."}]}

    async def main() -> tuple[StreamAssembler, dict[str, Any]]:
        async with aiohttp.ClientSession(headers=AUTH) as session:
            url = sim.base_url + "/chat/completions"
            async with session.post(url, json={**request, "stream": True}) as resp:
                assert resp.status == 200
                assert resp.content_type == "text/event-stream"
                assembler = StreamAssembler()
                async for chunk in resp.content.iter_any():
                    assembler.feed(chunk)
            async with session.post(url, json=request) as resp:
                plain = await resp.json()
        return assembler, plain

    assembler, plain = asyncio.run(main())
    body, error = assembler.result()
    assert error is None, error
    assert assembler.done and assembler.ttft_s is not None and assembler.ttft_s >= 0
    assert body["model"] == plain["model"] and body["provider"] == plain["provider"]
    assert body["id"].startswith("gen-")
    got, want = body["choices"][0], plain["choices"][0]
    assert got["finish_reason"] == want["finish_reason"]
    assert (got["message"].get("content") or None) == (want["message"].get("content") or None)
    assert got["message"].get("reasoning") == want["message"].get("reasoning")
    assert bool(got["message"].get("tool_calls")) == ("tools" in options)
    if "tools" in options:
        assert got["message"]["tool_calls"][0]["function"] == want["message"]["tool_calls"][0]["function"]
    assert body["usage"]["completion_tokens"] == plain["usage"]["completion_tokens"]
    assert body["usage"]["cost"] == pytest.approx(plain["usage"]["cost"])


@pytest.mark.parametrize(("fault", "kind"), [("finish_error", "server_error"), ("torn", "connection_error")])
def test_faults_in_a_simulated_stream(sim_factory, fault: str, kind: str) -> None:
    sim = sim_factory(faults={fault: 1.0})
    request = {"model": "google/gemini-2.0-flash-lite-001", "stream": True,
               "messages": [{"role": "user", "content": "Write a few words about retries."}]}

    async def main() -> StreamAssembler:
        assembler = StreamAssembler()
        url = sim.base_url + "/chat/completions"
        async with aiohttp.ClientSession(headers=AUTH) as session, session.post(url, json=request) as resp:
            try:
                async for chunk in resp.content.iter_any():
                    assembler.feed(chunk)
            except aiohttp.ClientPayloadError:
                pass  # the transport reports a cut body; the assembler says what it got
        return assembler

    _, error = asyncio.run(main()).result()
    assert error is not None and error["kind"] == kind
