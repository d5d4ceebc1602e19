"""records.py: the input shapes and rules of docs/design.md §1, and the output records of §2."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import pytest

from batchrun.records import (
    InputParser,
    InvalidLine,
    Request,
    error_record,
    estimate_prompt_tokens,
    success_record,
)

MODEL = "google/gemini-2.0-flash-lite-001"
USER_HI = [{"role": "user", "content": "hi"}]


def parser(**options: Any) -> InputParser:
    options.setdefault("model", MODEL)
    options.setdefault("params", {})
    return InputParser(**options)


def line(obj: Any) -> bytes:
    return orjson.dumps(obj)


def parse_ok(p: InputParser, raw: bytes, number: int = 1) -> Request:
    result = p.parse(raw, number)
    assert isinstance(result, Request), getattr(result, "message", result)
    return result


def sent(request: Request) -> dict[str, Any]:
    return orjson.loads(request.body)


# -- the four shapes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "obj", "custom_id", "body"),
    [
        pytest.param(  # sent as written: the job's params and system prompt are not merged in
            {"params": {"max_tokens": 16, "temperature": 1}, "system": "Be brief."},
            {"custom_id": "a1", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "openai/gpt-4o-mini", "messages": USER_HI, "temperature": 0}},
            "a1",
            {"model": "openai/gpt-4o-mini", "messages": USER_HI, "temperature": 0},
            id="openai-batch-line",
        ),
        pytest.param(  # only a missing model is filled in, from the job's
            {"params": {"max_tokens": 16}, "system": "Be brief."},
            {"custom_id": "a1", "method": "POST", "url": "/v1/chat/completions",
             "body": {"messages": USER_HI}},
            "a1", {"model": MODEL, "messages": USER_HI}, id="openai-batch-line-without-model",
        ),
        pytest.param(
            {},
            {"custom_id": "a1", "method": "post", "url": "/chat/completions", "body": {"messages": USER_HI}},
            "a1", {"model": MODEL, "messages": USER_HI}, id="openai-batch-line-lowercase-post",
        ),
        pytest.param(
            {},
            {"custom_id": "a1", "url": "/api/v1/chat/completions", "body": {"messages": USER_HI},
             "metadata": {"row": 1}},
            "a1", {"model": MODEL, "messages": USER_HI}, id="openai-batch-line-openrouter-path",
        ),
        pytest.param(
            {"params": {"max_tokens": 16}},
            {"custom_id": "a1", "messages": USER_HI, "temperature": 0, "metadata": {"row": 7}},
            "a1", {"model": MODEL, "max_tokens": 16, "messages": USER_HI, "temperature": 0},
            id="chat",
        ),
        pytest.param(
            {"params": {"max_tokens": 16}},
            {"id": "a1", "prompt": "Summarize: x", "metadata": {"row": 7}},
            "a1",
            {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "Summarize: x"}]},
            id="prompt",
        ),
        pytest.param(
            {"params": {"max_tokens": 4}, "template": "Label: {text} ({lang})"},
            {"id": "a1", "text": "great film", "lang": "en", "metadata": {"row": 7}},
            "a1",
            {"model": MODEL, "max_tokens": 4,
             "messages": [{"role": "user", "content": "Label: great film (en)"}]},
            id="row-and-template",
        ),
        pytest.param(
            {"template": "Label: {text}"},
            {"id": "a1", "prompt": "own prompt", "text": "ignored"},
            "a1", {"model": MODEL, "text": "ignored", "messages": [{"role": "user", "content": "own prompt"}]},
            id="template-not-applied-to-a-prompt-line",
        ),
        pytest.param(
            {"template": "Label: {text}"},
            {"id": "a1", "messages": USER_HI},
            "a1", {"model": MODEL, "messages": USER_HI}, id="template-not-applied-to-a-chat-line",
        ),
    ],
)
def test_shapes(options: dict[str, Any], obj: dict[str, Any], custom_id: str, body: dict[str, Any]) -> None:
    request = parse_ok(parser(**options), line(obj), 3)
    assert request.custom_id == custom_id
    assert request.line == 3
    assert sent(request) == body
    assert request.model == body["model"]
    assert request.metadata == obj.get("metadata")


# -- ids -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "custom_id"),
    [
        ({"custom_id": "c", "id": "i", "prompt": "x"}, "c"),
        ({"id": "i", "prompt": "x"}, "i"),
        ({"prompt": "x"}, "line-12"),
        ({"id": 42, "prompt": "x"}, "42"),
        ({"custom_id": 0, "prompt": "x"}, "0"),
        ({"custom_id": -7, "prompt": "x"}, "-7"),
        ({"custom_id": "", "prompt": "x"}, ""),
    ],
)
def test_id_rules(obj: dict[str, Any], custom_id: str) -> None:
    request = parse_ok(parser(), line(obj), 12)
    assert request.custom_id == custom_id
    assert "id" not in sent(request) and "custom_id" not in sent(request)


@pytest.mark.parametrize("bad_id", [1.5, True, None, ["a"], {"a": 1}], ids=repr)
def test_id_of_a_wrong_type_is_a_bad_line(bad_id: Any) -> None:
    result = parser().parse(line({"custom_id": "x", "prompt": "p"} | {"custom_id": bad_id}), 5)
    if bad_id is None:  # a null custom_id is no id: the line number stands in
        assert isinstance(result, Request) and result.custom_id == "line-5"
        return
    assert isinstance(result, InvalidLine)
    assert result.message == "custom_id/id must be a string"
    assert result.custom_id == "line-5"


def test_duplicate_id_first_wins() -> None:
    p = parser()
    first = parse_ok(p, line({"id": "a", "prompt": "one"}), 1)
    second = p.parse(line({"id": "a", "prompt": "two", "metadata": {"m": 1}}), 2)
    assert sent(first)["messages"][0]["content"] == "one"
    assert isinstance(second, InvalidLine)
    assert second.line == 2
    assert second.message == "duplicate id 'a': the first line with it wins"
    # The bad line is recorded under its line number so that it never shadows the first line's result.
    assert second.custom_id == "line-2"
    assert second.metadata == {"m": 1}


def test_an_int_id_and_its_string_are_the_same_id() -> None:
    p = parser()
    parse_ok(p, line({"id": 7, "prompt": "x"}), 1)
    assert isinstance(p.parse(line({"id": "7", "prompt": "x"}), 2), InvalidLine)


def test_a_bad_line_still_claims_its_id() -> None:
    p = parser()
    assert isinstance(p.parse(line({"id": "a", "messages": "oops"}), 1), InvalidLine)
    dup = p.parse(line({"id": "a", "prompt": "fixed"}), 2)
    assert isinstance(dup, InvalidLine) and dup.message.startswith("duplicate id 'a'")


def test_skip_ids_return_none_and_still_count_as_seen() -> None:
    p = parser(skip_ids={"done"})
    assert p.parse(line({"id": "done", "prompt": "x"}), 1) is None
    assert isinstance(p.parse(line({"id": "done", "prompt": "x"}), 2), InvalidLine)
    assert isinstance(p.parse(line({"id": "todo", "prompt": "x"}), 3), Request)


# -- job defaults, system prompt, metadata -------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"prompt": "x"}, {"model": MODEL, "max_tokens": 16, "temperature": 0}),
        ({"prompt": "x", "temperature": 0.7}, {"model": MODEL, "max_tokens": 16, "temperature": 0.7}),
        ({"prompt": "x", "model": "openai/gpt-4o", "max_tokens": 99},
         {"model": "openai/gpt-4o", "max_tokens": 99, "temperature": 0}),
        ({"messages": USER_HI, "max_tokens": 1}, {"model": MODEL, "max_tokens": 1, "temperature": 0}),
    ],
)
def test_job_defaults_fill_what_the_line_leaves_out(obj: dict[str, Any], expected: dict[str, Any]) -> None:
    body = sent(parse_ok(parser(params={"max_tokens": 16, "temperature": 0}), line(obj)))
    assert {k: body[k] for k in expected} == expected


def test_an_openai_batch_line_is_sent_as_written() -> None:
    obj = {"custom_id": "b", "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": "openai/gpt-4o-mini", "messages": USER_HI, "temperature": 1}}
    p = parser(params={"max_tokens": 16, "temperature": 0}, system="S", template="{text}")
    assert sent(parse_ok(p, line(obj))) == obj["body"]


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        (USER_HI, [{"role": "system", "content": "Be terse."}, *USER_HI]),
        ([{"role": "system", "content": "Mine."}, *USER_HI], [{"role": "system", "content": "Mine."}, *USER_HI]),
        ([{"role": "developer", "content": "Dev."}, *USER_HI],
         [{"role": "developer", "content": "Dev."}, *USER_HI]),
        ([*USER_HI, {"role": "system", "content": "Late."}], [*USER_HI, {"role": "system", "content": "Late."}]),
    ],
)
def test_system_prompt_prepended_only_when_there_is_none(
    messages: list[dict[str, Any]], expected: list[dict[str, Any]]
) -> None:
    p = parser(system="Be terse.")
    assert sent(parse_ok(p, line({"messages": messages})))["messages"] == expected


@pytest.mark.parametrize(
    "obj",
    [
        {"id": "a", "prompt": "x"},
        {"id": "a", "text": "x"},
        {"id": "a", "messages": USER_HI},
    ],
)
def test_system_prompt_in_every_shape_but_batch_lines(obj: dict[str, Any]) -> None:
    body = sent(parse_ok(parser(system="S", template="{text}"), line(obj)))
    assert body["messages"][0] == {"role": "system", "content": "S"}
    assert len(body["messages"]) == 2


@pytest.mark.parametrize(
    "obj",
    [
        {"id": "a", "messages": USER_HI, "metadata": {"row": 7, "gold": "pos"}},
        {"id": "a", "prompt": "x", "metadata": {"row": 7, "gold": "pos"}},
        {"id": "a", "text": "x", "metadata": {"row": 7, "gold": "pos"}},
        {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": USER_HI},
         "metadata": {"row": 7, "gold": "pos"}},
    ],
)
def test_metadata_is_carried_and_never_sent(obj: dict[str, Any]) -> None:
    request = parse_ok(parser(template="{text}"), line(obj))
    assert request.metadata == {"row": 7, "gold": "pos"}
    assert b"gold" not in request.body and "metadata" not in sent(request)


def test_chat_shape_sends_every_other_field() -> None:
    obj = {"id": "a", "messages": USER_HI, "response_format": {"type": "json_object"}, "label": "x"}
    assert sent(parse_ok(parser(), line(obj))) == {
        "model": MODEL, "messages": USER_HI, "response_format": {"type": "json_object"}, "label": "x",
    }


@pytest.mark.parametrize(
    ("response_format", "schema_required"),
    [
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}, True),
        ({"type": "json_object"}, False),
        (None, False),
    ],
)
def test_schema_required_follows_response_format(response_format: Any, schema_required: bool) -> None:
    obj: dict[str, Any] = {"prompt": "x"}
    if response_format is not None:
        obj["response_format"] = response_format
    assert parse_ok(parser(), line(obj)).schema_required is schema_required


@pytest.mark.parametrize(
    ("obj", "max_tokens", "est_tokens"),
    [
        ({"prompt": "abcdefgh", "max_tokens": 10}, 10, 2 + 4 + 3 + 10),
        ({"prompt": "abcdefgh", "max_completion_tokens": 5}, 5, 2 + 4 + 3 + 5),
        ({"prompt": "abcdefgh"}, None, 2 + 4 + 3),
    ],
)
def test_request_books_prompt_plus_max_tokens(obj: dict[str, Any], max_tokens: int | None, est_tokens: int) -> None:
    request = parse_ok(parser(), line(obj))
    assert request.max_tokens == max_tokens
    assert request.prompt_tokens_est == 9
    assert request.est_tokens == est_tokens
    assert (request.attempts, request.billed_usd, request.reserved_nano) == (0, 0.0, 0)


# -- budget ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "obj", "ok"),
    [
        ({}, {"id": "a", "prompt": "x"}, False),
        ({}, {"id": "a", "prompt": "x", "max_tokens": 5}, True),
        ({}, {"id": "a", "prompt": "x", "max_completion_tokens": 5}, True),
        ({"max_tokens": 16}, {"id": "a", "prompt": "x"}, True),
        ({}, {"custom_id": "a", "url": "/v1/chat/completions", "body": {"messages": USER_HI, "max_tokens": 3}},
         True),
    ],
)
def test_budget_set_requires_max_tokens(params: dict[str, Any], obj: dict[str, Any], ok: bool) -> None:
    result = parser(params=params, budget_set=True).parse(line(obj), 4)
    if ok:
        assert isinstance(result, Request)
    else:
        assert isinstance(result, InvalidLine)
        assert result.message == "a budget (max_cost_usd) is set, so every request needs max_tokens"
        assert result.custom_id == "a"


def test_without_a_budget_max_tokens_is_optional() -> None:
    assert isinstance(parser().parse(line({"prompt": "x"}), 1), Request)


# -- bad lines -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message", "custom_id"),
    [
        pytest.param(b'{"id": "a", "prompt": ', "not valid JSON: Expecting value at column 23", "line-9",
                     id="torn-json"),
        pytest.param(b"hello", "not valid JSON: Expecting value at column 1", "line-9", id="not-json"),
        pytest.param(b"42", "expected a JSON object, got a number", "line-9", id="number"),
        pytest.param(b'[{"prompt": "x"}]', "expected a JSON object, got an array", "line-9", id="array"),
        pytest.param(b'"text"', "expected a JSON object, got a string", "line-9", id="string"),
        pytest.param(b"null", "expected a JSON object, got null", "line-9", id="null"),
        pytest.param(b"true", "expected a JSON object, got a boolean", "line-9", id="boolean"),
        pytest.param(b'{"id": "a", "text": "x"}',
                     "no messages or prompt, and no template (template = or --template) to fill from the row", "a",
                     id="no-messages-or-prompt"),
        pytest.param(b'{"id": "a", "messages": "hi"}', "messages must be a non-empty array", "a",
                     id="messages-not-a-list"),
        pytest.param(b'{"id": "a", "messages": []}', "messages must be a non-empty array", "a",
                     id="messages-empty"),
        pytest.param(b'{"id": "a", "messages": ["hi"]}', "messages[0] must be an object with a string role",
                     "a", id="message-not-an-object"),
        pytest.param(b'{"id": "a", "messages": [{"content": "hi"}]}',
                     "messages[0] must be an object with a string role", "a", id="message-without-role"),
        pytest.param(b'{"id": "a", "messages": [{"role": "user", "content": 5}]}',
                     "messages[0].content must be a string or an array of parts", "a", id="content-number"),
        pytest.param(b'{"id": "a", "prompt": ["x"]}', "prompt must be a string, got an array", "a",
                     id="prompt-not-a-string"),
        pytest.param(b'{"id": "a", "prompt": null}', "prompt must be a string, got null", "a", id="prompt-null"),
        pytest.param(b'{"id": "a", "prompt": "x", "max_tokens": "16"}',
                     "max_tokens must be a positive integer, got '16'", "a", id="max-tokens-string"),
        pytest.param(b'{"id": "a", "prompt": "x", "max_tokens": -1}',
                     "max_tokens must be a positive integer, got -1", "a", id="max-tokens-negative"),
        pytest.param(b'{"id": "a", "prompt": "x", "max_tokens": 0}',
                     "max_tokens must be a positive integer, got 0", "a", id="max-tokens-zero"),
        pytest.param(b'{"id": "a", "prompt": "x", "max_tokens": 1.5}',
                     "max_tokens must be a positive integer, got 1.5", "a", id="max-tokens-float"),
        pytest.param(b'{"id": "a", "prompt": "x", "seed": true}',
                     "seed must be a non-negative integer, got True", "a", id="seed-bool"),
        pytest.param(b'{"id": "a", "prompt": "x", "temperature": "hot"}',
                     "temperature must be a number, got 'hot'", "a", id="temperature-string"),
        pytest.param(b'{"id": "a", "prompt": "x", "model": ""}', "model must be a non-empty string", "a",
                     id="model-empty"),
        pytest.param(b'{"id": "a", "prompt": "x", "model": 3}', "model must be a non-empty string", "a",
                     id="model-number"),
        pytest.param(b'{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}',
                     "url '/v1/embeddings' is not served: batchrun sends chat completions (/v1/chat/completions)",
                     "a", id="batch-url-unsupported"),
        pytest.param(b'{"custom_id": "a", "method": "GET", "url": "/v1/chat/completions", "body": {}}',
                     "method must be POST, got 'GET'", "a", id="batch-method-get"),
        pytest.param(b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": "x"}',
                     "body must be a JSON object, got a string", "a", id="batch-body-string"),
        pytest.param(b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}',
                     "body has no messages", "a", id="batch-body-without-messages"),
        pytest.param(b'{"id": "a", "prompt": "caf\xe9"}', "not valid UTF-8 (byte 26): save the file as UTF-8",
                     "line-9", id="invalid-utf8"),
        pytest.param(b"\xff\xfe{}", "not valid UTF-8 (byte 0): save the file as UTF-8", "line-9",
                     id="utf16-bom"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "not valid JSON: nested too deeply", "line-9",
                     id="nested-too-deeply"),
    ],
)
def test_bad_lines(raw: bytes, message: str, custom_id: str) -> None:
    result = parser().parse(raw, 9)
    assert isinstance(result, InvalidLine)
    assert (result.line, result.message, result.custom_id) == (9, message, custom_id)


@pytest.mark.parametrize(
    ("template", "row", "message"),
    [
        ("Label: {text}", {"id": "a", "txt": "x"}, "template field {text} is missing from this row"),
        ("{title}: {text}", {"id": "a", "text": "x"}, "template field {title} is missing from this row"),
        ("{0}", {"id": "a", "text": "x"}, "template field {0} is missing from this row"),
    ],
)
def test_missing_template_field_is_named(template: str, row: dict[str, Any], message: str) -> None:
    result = parser(template=template).parse(line(row), 2)
    assert isinstance(result, InvalidLine)
    assert (result.message, result.custom_id) == (message, "a")


def test_template_can_use_the_id_and_format_specs() -> None:
    body = sent(parse_ok(parser(template="[{id}] {n:03d}"), line({"id": "r1", "n": 7})))
    assert body["messages"] == [{"role": "user", "content": "[r1] 007"}]


def test_template_that_cannot_be_filled_says_why() -> None:
    result = parser(template="{n:d}").parse(line({"id": "a", "n": "seven"}), 1)
    assert isinstance(result, InvalidLine)
    assert result.message.startswith("template cannot be filled from this row: ")


def test_bad_line_keeps_its_metadata() -> None:
    result = parser().parse(line({"id": "a", "messages": 5, "metadata": {"row": 3}}), 1)
    assert isinstance(result, InvalidLine) and result.metadata == {"row": 3}


def test_nan_and_infinity_are_read_not_rejected() -> None:
    request = parse_ok(parser(), b'{"id": "a", "prompt": "x", "temperature": NaN, "metadata": {"w": Infinity}}')
    assert request.custom_id == "a"
    assert request.metadata == {"w": float("inf")}
    assert sent(request)["messages"] == [{"role": "user", "content": "x"}]


def test_integers_beyond_64_bits_are_read_exactly() -> None:
    big = 123456789012345678901234567890
    request = parse_ok(parser(), b'{"id": %d, "prompt": "x", "metadata": {"n": %d}}' % (big, big))
    assert request.custom_id == str(big)
    assert request.metadata == {"n": big}


def test_integers_beyond_64_bits_are_not_a_bad_line() -> None:
    big = 123456789012345678901234567890
    request = parse_ok(parser(), b'{"id": "a", "prompt": "x", "seed": %d, "metadata": {"n": %d}}' % (big, big))
    assert request.metadata["n"] == big
    assert b'"seed":%d' % big in request.body  # sent exactly as written


def test_a_one_megabyte_line_is_fine() -> None:
    text = "word " * 200_000
    request = parse_ok(parser(), line({"id": "big", "prompt": text}))
    assert len(sent(request)["messages"][0]["content"]) == 1_000_000
    assert request.prompt_tokens_est == 250_000 + 4 + 3


# -- token estimate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "tokens"),
    [
        ([], 3),
        ([{"role": "user", "content": ""}], 7),
        ([{"role": "user", "content": "abcd"}], 8),
        ([{"role": "user", "content": "abcde"}], 9),
        ([{"role": "system", "content": "x" * 40}, {"role": "user", "content": "y" * 40}], 10 + 10 + 8 + 3),
        ([{"role": "user", "content": [{"type": "text", "text": "abcdefgh"},
                                       {"type": "image_url", "image_url": {"url": "data:..."}}]}], 2 + 4 + 3),
        ([{"role": "assistant", "content": None, "tool_calls": []}], 7),
        (["not a message"], 7),
    ],
)
def test_estimate_prompt_tokens(messages: list[Any], tokens: int) -> None:
    assert estimate_prompt_tokens(messages) == tokens


# -- output records -----------------------------------------------------------------------------------

_RECORD_ID = re.compile(r"batch_req_[0-9a-f]{24}")
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def test_success_record_embeds_the_raw_body_and_the_batch_fields() -> None:
    request = parse_ok(parser(), line({"custom_id": "a1", "prompt": "x", "metadata": {"row": 7}}))
    request.attempts, request.billed_usd = 2, 0.0000258
    raw = b'{"id":"gen-1","model":"google/gemini-2.0-flash-lite-001","provider":"Google","choices":[]}'
    usage = {"prompt_tokens": 12, "cost_usd": 0.0000129, "cost_source": "provider"}
    record = success_record(request, raw, orjson.loads(raw), usage, 0.843219)
    assert _RECORD_ID.fullmatch(record.pop("id"))
    assert _ISO.fullmatch(record.pop("finished_at"))
    written = orjson.dumps(record)
    assert b'"body":' + raw in written  # the provider's JSON, byte for byte
    assert orjson.loads(written) == {
        "custom_id": "a1",
        "response": {"status_code": 200, "request_id": "gen-1", "body": orjson.loads(raw)},
        "error": None,
        "usage": usage,
        "billed_usd": 0.0000258,
        "model": "google/gemini-2.0-flash-lite-001",
        "provider": "Google",
        "attempts": 2,
        "latency_s": 0.8432,
        "ttft_s": None,  # not streamed
        "metadata": {"row": 7},
    }


def test_success_record_falls_back_to_the_requested_model() -> None:
    request = parse_ok(parser(), line({"prompt": "x"}))
    record = success_record(request, b"{}", {}, {}, 1.0)
    assert (record["model"], record["provider"], record["response"]["request_id"]) == (MODEL, None, None)


def test_record_ids_are_unique() -> None:
    request = parse_ok(parser(), line({"prompt": "x"}))
    assert len({success_record(request, b"{}", {}, {}, 0.0)["id"] for _ in range(100)}) == 100


def test_error_record_of_a_failed_request() -> None:
    request = parse_ok(parser(), line({"custom_id": "a1", "prompt": "x", "metadata": {"row": 7}}))
    request.attempts, request.billed_usd = 6, 0.001
    body = {"id": "gen-9", "model": "m2", "provider": "P", "error": {"code": 429, "message": "slow"}}
    usage = {"prompt_tokens": 0, "cost_usd": None, "cost_source": "unknown"}
    record = error_record("a1", 12, "rate_limited", "slow", status=429, body=body, usage=usage,
                          request=request, latency_s=1.23456)
    assert _RECORD_ID.fullmatch(record.pop("id"))
    assert _ISO.fullmatch(record.pop("finished_at"))
    assert record == {
        "custom_id": "a1",
        "response": {"status_code": 429, "request_id": "gen-9", "body": body},
        "error": {"code": "rate_limited", "message": "slow", "status": 429, "line": 12},
        "usage": usage,
        "billed_usd": 0.001,
        "model": "m2",
        "provider": "P",
        "attempts": 6,
        "latency_s": 1.2346,
        "metadata": {"row": 7},
    }


def test_error_record_of_a_bad_line() -> None:
    bad = parser().parse(b"{nope", 4)
    assert isinstance(bad, InvalidLine)
    record = error_record(bad.custom_id, bad.line, "invalid_input", bad.message, metadata={"k": 1})
    del record["id"], record["finished_at"]
    assert record == {
        "custom_id": "line-4",
        "response": None,
        "error": {"code": "invalid_input", "message": bad.message, "status": None, "line": 4},
        "usage": None,
        "billed_usd": 0.0,
        "model": None,
        "provider": None,
        "attempts": 0,
        "latency_s": None,
        "metadata": {"k": 1},
    }


def test_error_record_with_a_text_body_uses_the_request_model() -> None:
    request = parse_ok(parser(), line({"prompt": "x"}))
    record = error_record("line-1", 1, "server_error", "HTML", status=502, body="<html>", request=request)
    assert record["response"] == {"status_code": 502, "request_id": None, "body": "<html>"}
    assert (record["model"], record["provider"]) == (MODEL, None)
    assert json.loads(orjson.dumps(record))["error"]["status"] == 502
