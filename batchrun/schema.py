"""Structured outputs: which JSON Schema a request asks for, and whether a reply obeys it. Pure.

The runner calls ``schema_of`` once per request and ``validate_reply`` on every HTTP-200 reply
whose request has a schema; a failure is an ``invalid_output`` (docs/design.md §4) with the message
returned here. Validators are built once per distinct schema (building one costs far more than
validating a small reply with it) and kept in a small cache.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # jsonschema costs ~40 ms to import: only jobs with a schema load it
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

__all__ = ["check_schema", "reply_text", "schema_of", "validate_reply"]

# A fenced block anywhere in the reply: ```json ... ``` (the language tag is optional).
_FENCE = re.compile(r"```[ \t]*(?:json|JSON|json5)?[ \t]*\r?\n?(.*?)\r?\n?[ \t]*```", re.DOTALL)
_MAX_SHOWN = 80  # characters of an offending value quoted in a message


def schema_of(body: Mapping[str, Any], job_schema: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The schema a reply must obey: the request's ``response_format.json_schema.schema``, else the job's.

    The schema object itself is returned, not a copy: requests built from the job's params share it.

    A request's own schema wins over the job's; ``{"type": "json_object"}`` asks for JSON but
    gives no schema, so only the job's applies to it.
    """
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        if isinstance(spec, Mapping) and isinstance(spec.get("schema"), Mapping):
            schema: dict[str, Any] = spec["schema"]
            return schema
    return None if job_schema is None else job_schema  # type: ignore[return-value]


def check_schema(schema: Mapping[str, Any]) -> str | None:
    """None when ``schema`` is a valid JSON Schema, else a message saying what is wrong with it."""
    from jsonschema.exceptions import SchemaError

    try:
        _validator(_canonical(schema))
    except SchemaError as exc:
        return f"not a valid JSON Schema: {_path('schema', exc.absolute_path)}: {exc.message}"
    except (TypeError, orjson.JSONEncodeError) as exc:
        return f"not a valid JSON Schema: {exc}"
    return None


def reply_text(body: Mapping[str, Any]) -> str | None:
    """The text of ``choices[0].message.content`` (text parts joined), or None when there is none."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, Mapping) else None
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, Mapping)]
        content = "".join(p for p in parts if isinstance(p, str))
    return content if isinstance(content, str) else None


def validate_reply(body_json: Mapping[str, Any], schema: Mapping[str, Any] | None) -> tuple[Any, str | None]:
    """Parse the reply's content as JSON and check it against ``schema``.

    ``body_json`` is the provider's parsed chat.completion body. Returns ``(parsed, None)`` on
    success and ``(None, message)`` on failure, the message naming the place (``$.label``) and
    the reason. With ``schema`` None the content need only be JSON. A ```json fence around
    the content (some models add one even when asked not to) is removed first.
    """
    choices = body_json.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    finish = first.get("finish_reason") if isinstance(first, Mapping) else None
    if finish == "length":
        return None, "reply cut off by max_tokens (finish_reason 'length'), so it cannot be whole JSON"
    text = reply_text(body_json)
    if text is None:
        message = first.get("message") if isinstance(first, Mapping) else None
        if isinstance(message, Mapping) and message.get("tool_calls"):
            return None, "reply has tool_calls but no content to check against the schema"
        return None, "reply has no text content (choices[0].message.content)"
    text = _unfence(text)
    if not text:
        return None, "reply content is empty, expected JSON"
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return None, f"reply is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}" \
            f" (starts {_shown(text)})"
    if schema is None:
        return parsed, None
    import jsonschema.exceptions
    from jsonschema.exceptions import SchemaError

    try:
        validator = _validator(_canonical(schema))
    except SchemaError as exc:
        return None, f"the schema itself is invalid: {exc.message}"
    error = jsonschema.exceptions.best_match(validator.iter_errors(parsed))
    if error is None:
        return parsed, None
    return None, f"reply does not match the schema at {_path('$', error.absolute_path)}: {_reason(error)}"


def _unfence(text: str) -> str:
    stripped = text.strip()
    if "```" not in stripped:
        return stripped
    match = _FENCE.search(stripped)
    return match.group(1).strip() if match else stripped.strip("`").strip()


def _canonical(schema: Mapping[str, Any]) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)


@functools.lru_cache(maxsize=64)
def _validator(canonical: bytes) -> Validator:
    import jsonschema

    schema = orjson.loads(canonical)
    # The schema's own $schema picks the draft; without one, Draft 2020-12.
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def _path(root: str, parts: Any) -> str:
    out = root
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = repr(text) if isinstance(value, str) else text
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def _reason(error: ValidationError) -> str:
    # jsonschema's own messages quote the whole instance; keep them short enough for one line.
    if error.validator == "enum":
        allowed = ", ".join(orjson.dumps(v).decode() for v in error.validator_value)
        return f"{_shown(error.instance)} is not one of {allowed}"
    if error.validator == "required":
        missing = [k for k in error.validator_value if isinstance(error.instance, dict) and k not in error.instance]
        return f"missing required property {missing[0]!r}" if missing else error.message
    if error.validator == "type":
        return f"{_shown(error.instance)} is not of type {orjson.dumps(error.validator_value).decode()}"
    message: str = error.message
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        return message
    return message if len(message) <= 200 else message[:199] + "…"
