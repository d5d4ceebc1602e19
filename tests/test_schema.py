"""Structured outputs: which schema applies, and replies checked against it (table-driven)."""

from __future__ import annotations

from typing import Any

import pytest

from batchrun.schema import check_schema, reply_text, schema_of, validate_reply

LABEL = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["billing", "bug", "feature", "other"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["label", "confidence"],
    "additionalProperties": False,
}


def reply(content: Any, finish: str | None = "stop", **message: Any) -> dict[str, Any]:
    return {"id": "gen-1", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": content, **message},
         "finish_reason": finish}
    ]}


def fmt(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": schema}}


@pytest.mark.parametrize(
    ("body", "job", "expected"),
    [
        ({"response_format": fmt(LABEL)}, None, LABEL),
        ({"response_format": fmt(LABEL)}, {"type": "string"}, LABEL),
        ({}, {"type": "string"}, {"type": "string"}),
        ({"response_format": {"type": "json_object"}}, None, None),
        ({"response_format": {"type": "json_object"}}, {"type": "array"}, {"type": "array"}),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, None, None),
        ({"response_format": "json"}, None, None),
        ({}, None, None),
    ],
    ids=["request", "request-wins", "job", "json-object", "json-object-job", "no-schema-key",
         "not-a-dict", "none"],
)
def test_schema_of(body: dict[str, Any], job: Any, expected: Any) -> None:
    assert schema_of(body, job) == expected


@pytest.mark.parametrize(
    ("content", "parsed"),
    [
        ('{"label": "bug", "confidence": 0.9}', {"label": "bug", "confidence": 0.9}),
        ('  {"label": "bug", "confidence": 1}\n', {"label": "bug", "confidence": 1}),
        ('```json\n{"label": "other", "confidence": 0.5}\n```', {"label": "other", "confidence": 0.5}),
        ('```\n{"label": "other", "confidence": 0}\n```', {"label": "other", "confidence": 0}),
        ('Here you go:\n```json\n{"label": "feature", "confidence": 0.2}\n```\nDone.',
         {"label": "feature", "confidence": 0.2}),
        ('{"label": "bug", "confidence": 0.7, "tags": ["ui", "login"]}',
         {"label": "bug", "confidence": 0.7, "tags": ["ui", "login"]}),
        ([{"type": "text", "text": '{"label": "bug",'}, {"type": "text", "text": ' "confidence": 1}'}],
         {"label": "bug", "confidence": 1}),
    ],
    ids=["plain", "whitespace", "fence-json", "fence-bare", "fence-in-prose", "array", "parts"],
)
def test_valid_replies(content: Any, parsed: Any) -> None:
    assert validate_reply(reply(content), LABEL) == (parsed, None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (reply('{"label": "refund", "confidence": 0.9}'),
         "at $.label: 'refund' is not one of \"billing\", \"bug\", \"feature\", \"other\""),
        (reply('{"label": "bug"}'), "at $: missing required property 'confidence'"),
        (reply('{"label": "bug", "confidence": "high"}'), "at $.confidence: 'high' is not of type \"number\""),
        (reply('{"label": "bug", "confidence": 1.5}'), "at $.confidence: 1.5 is greater than the maximum of 1"),
        (reply('{"label": "bug", "confidence": 1, "tags": ["a", 2]}'), "at $.tags[1]: 2 is not of type \"string\""),
        (reply('{"label": "bug", "confidence": 1, "why": "x"}'), "Additional properties are not allowed ('why'"),
        (reply('["bug"]'), "at $: [\"bug\"] is not of type \"object\""),
        (reply('{"label": "bug", "confidence": '), "reply is not valid JSON"),
        (reply("bug"), "reply is not valid JSON"),
        (reply(""), "reply content is empty"),
        (reply(None), "no text content"),
        (reply(None, tool_calls=[{"id": "c"}]), "tool_calls but no content"),
        (reply('{"label": "bu', finish="length"), "cut off by max_tokens (finish_reason 'length')"),
        ({"choices": []}, "no text content"),
        ({}, "no text content"),
    ],
    ids=["enum", "required", "type", "maximum", "item-type", "additional", "root-type", "torn-json",
         "prose", "empty", "null-content", "tool-calls", "length", "no-choices", "no-body"],
)
def test_invalid_replies_say_where_and_why(body: dict[str, Any], message: str) -> None:
    parsed, error = validate_reply(body, LABEL)
    assert parsed is None
    assert error is not None and message in error, error


def test_without_a_schema_any_json_passes_and_prose_does_not() -> None:
    assert validate_reply(reply("[1, 2]"), None) == ([1, 2], None)
    assert validate_reply(reply("hello"), None)[1] is not None


def test_the_draft_is_taken_from_the_schema() -> None:
    # Draft 4 reads exclusiveMaximum as a boolean; 2020-12 (the default) as a number.
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "number",
              "maximum": 1, "exclusiveMaximum": True}
    assert validate_reply(reply("1"), draft4)[1] is not None
    assert validate_reply(reply("1"), {"type": "number", "exclusiveMaximum": 2}) == (1, None)
    # 2020-12's prefixItems is understood without a $schema.
    tuple_schema = {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}]}
    assert validate_reply(reply('["a", 1]'), tuple_schema) == (["a", 1], None)
    assert "at $[1]" in (validate_reply(reply('["a", "b"]'), tuple_schema)[1] or "")


def test_refs_resolve_within_the_schema() -> None:
    schema = {"$defs": {"label": {"enum": ["a", "b"]}}, "type": "object",
              "properties": {"label": {"$ref": "#/$defs/label"}}}
    assert validate_reply(reply('{"label": "a"}'), schema) == ({"label": "a"}, None)
    assert "at $.label" in (validate_reply(reply('{"label": "c"}'), schema)[1] or "")


@pytest.mark.parametrize(
    ("schema", "ok"),
    [(LABEL, True), ({"type": "strin"}, False), ({"type": "object", "required": "label"}, False),
     ({"minimum": "zero"}, False)],
)
def test_check_schema(schema: dict[str, Any], ok: bool) -> None:
    problem = check_schema(schema)
    assert (problem is None) == ok, problem
    if not ok:
        assert problem is not None and problem.startswith("not a valid JSON Schema")
        assert "the schema itself is invalid" in (validate_reply(reply("1"), schema)[1] or "")


def test_long_values_are_cut_in_messages() -> None:
    _, error = validate_reply(reply('{"label": "' + "x" * 500 + '", "confidence": 1}'), LABEL)
    assert error is not None and len(error) < 250


def test_reply_text() -> None:
    assert reply_text(reply("hi")) == "hi"
    assert reply_text({"choices": [{"message": {"content": None}}]}) is None
    assert reply_text({"choices": "x"}) is None
