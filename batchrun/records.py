"""Input line → request, and outcome → output record. No I/O; records get a random id and a time stamp.

The four input shapes and their rules are docs/design.md §1; the output record is §2.
"""

from __future__ import annotations

import json
import math
import random
import string
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import orjson

from batchrun.idset import IdSet
from batchrun.inputs import TableRow
from batchrun.schema import schema_of

__all__ = [
    "InputParser",
    "InvalidLine",
    "Request",
    "error_record",
    "estimate_prompt_tokens",
    "success_record",
]

_ID_KEYS = ("custom_id", "id")
_NOT_SENT = frozenset({"custom_id", "id", "metadata"})
_CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions", "/api/v1/chat/completions"})
# Some servers read max_tokens 0 as "no limit" (llama.cpp's): at least 1, so a cap is a cap.
_POSITIVE_INT_PARAMS = ("max_tokens", "max_completion_tokens", "n")
_INT_PARAMS = ("seed", "top_k")
_NUMBER_PARAMS = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "min_p")


class Request:
    """One line's request, as it travels through the pool; mutable counters, fixed body."""

    __slots__ = (
        "attempts", "billed_usd", "body", "custom_id", "est_tokens", "line", "max_tokens",
        "metadata", "model", "models", "prompt_tokens_est", "reserved_nano", "schema", "schema_failures",
        "schema_required",
    )

    def __init__(
        self, custom_id: str, line: int, body: bytes, model: str, prompt_tokens_est: int,
        max_tokens: int | None, metadata: Any, schema_required: bool,
        schema: Mapping[str, Any] | None = None,
    ) -> None:
        self.custom_id = custom_id
        self.line = line
        self.body = body
        self.model = model
        self.prompt_tokens_est = prompt_tokens_est
        self.max_tokens = max_tokens
        # What the rate limiter books: the prompt plus the worst case of the reply.
        self.est_tokens = prompt_tokens_est + (max_tokens or 0)
        self.metadata = metadata
        self.schema_required = schema_required
        self.schema = schema  # the JSON Schema replies must match (schema.validate_reply), or None
        self.schema_failures = 0  # replies that failed it: retried up to the job's schema_retries
        self.models: tuple[str, ...] = ()  # OpenRouter's fallback list: any of them may be billed
        self.attempts = 0
        self.billed_usd = 0.0
        self.reserved_nano = 0  # worst-case cost booked against the budget while in flight


class InvalidLine:
    """A line that cannot become a request; it becomes an ``invalid_input`` error record."""

    __slots__ = ("custom_id", "line", "message", "metadata")

    def __init__(self, line: int, message: str, custom_id: str | None = None, metadata: Any = None):
        self.line = line
        self.message = message
        self.custom_id = custom_id if custom_id is not None else f"line-{line}"
        self.metadata = metadata


def estimate_prompt_tokens(messages: list[Any]) -> int:
    """A tokenizer-free estimate: 4 characters of text per token plus 4 tokens per message.

    No tokenizer can be downloaded at run time; for English prose this is within about ±20 %
    of OpenAI's and Gemini's counts. Only the rate limiter and the budget use it, and both are
    settled against the real usage afterwards.
    """
    chars = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    chars += len(part["text"])
    return math.ceil(chars / 4) + 4 * len(messages) + 3


def _unread(skip_ids: Collection[str]) -> IdSet | None:
    """A copy of ``skip_ids`` to take read ids out of, or None when there is nothing to skip."""
    if not skip_ids:
        return None
    return skip_ids.copy() if isinstance(skip_ids, IdSet) else IdSet(skip_ids)


class _Template(string.Formatter):
    def get_value(self, key: int | str, args: Any, kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, int) or key not in kwargs:
            raise LookupError(key)
        return kwargs[key]


class InputParser:
    """Turns raw input lines into requests, with the job's defaults merged under each line."""

    def __init__(
        self,
        *,
        model: str,
        params: Mapping[str, Any],
        system: str | None = None,
        template: str | None = None,
        skip_ids: Collection[str] = frozenset(),
        budget_set: bool = False,
        keep_fields: Sequence[str] = (),
        schema: Mapping[str, Any] | None = None,
        ask_stream_usage: bool = False,
    ) -> None:
        """``skip_ids``: ids already done (or kept as failed), read once, when the parser is made.

        ``keep_fields``: input fields copied into each record's ``metadata`` (over the row's own).

        ``schema``: the job's JSON Schema, for requests whose own response_format gives none.
        ``ask_stream_usage``: add ``stream_options: {"include_usage": true}`` to a streamed request
        that has no ``stream_options``; OpenAI and vLLM send no usage in a stream without it.
        """
        self._ask_stream_usage = ask_stream_usage
        self._schema = schema
        self._defaults = {"model": model, **params}
        self._keep_fields = tuple(keep_fields)
        self._system = system
        self._template = template
        self._formatter = _Template()
        # A skipped id is looked up once: its first line takes it out of _unread, and a later line
        # with it, found in skip_ids, is a duplicate. The other ids read go to _seen.
        self._unread = _unread(skip_ids)
        self._skip_ids = skip_ids if self._unread is not None else frozenset()
        self._seen = IdSet()
        self._budget_set = budget_set

    def parse(self, raw: bytes, line: int) -> Request | InvalidLine | None:
        """A request, an invalid line, or None when the id is already done (or kept as failed)."""
        table_row = isinstance(raw, TableRow)
        row_error = raw.error if isinstance(raw, TableRow) else None
        if isinstance(raw, TableRow):
            obj: Any = raw.row
        else:
            try:
                # orjson reads integers beyond 64 bits as floats (losing digits): 19+ digits in a
                # row send the line to the standard parser, which keeps them exact.
                obj = _lenient_json(raw, line) if _has_long_number(raw) else orjson.loads(raw)
            except orjson.JSONDecodeError:
                obj = _lenient_json(raw, line)
            if isinstance(obj, InvalidLine):
                return obj
        if not isinstance(obj, dict):
            return InvalidLine(line, f"expected a JSON object, got {_json_type(obj)}")
        custom_id = obj.get("custom_id", obj.get("id"))
        if table_row and custom_id == "":
            custom_id = None  # an empty id cell: the row is named by its line
        metadata = None if table_row else obj.get("metadata")
        if self._keep_fields:
            metadata = self._kept(obj, metadata)
        if row_error is not None:
            return InvalidLine(line, row_error, None if custom_id is None else str(custom_id), metadata)
        if custom_id is None:
            custom_id = f"line-{line}"
        elif isinstance(custom_id, bool) or not isinstance(custom_id, (str, int)):
            return InvalidLine(line, "custom_id/id must be a string", None, metadata)
        else:
            custom_id = str(custom_id)
        unread = self._unread
        if unread is not None and unread.discard(custom_id):
            return None
        if custom_id in self._skip_ids or not self._seen.add(custom_id):
            return InvalidLine(line, f"duplicate id {custom_id!r}: the first line with it wins", None, metadata)
        try:
            body = self._row_body(obj) if table_row else self._body_of(obj)
        except _Bad as bad:
            return InvalidLine(line, str(bad), custom_id, metadata)
        if self._ask_stream_usage and body.get("stream") is True and "stream_options" not in body:
            body["stream_options"] = {"include_usage": True}
        messages = body["messages"]
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        if self._budget_set and max_tokens is None:
            return InvalidLine(
                line, "a budget (max_cost_usd) is set, so every request needs max_tokens", custom_id, metadata
            )
        response_format = body.get("response_format")
        schema = schema_of(body, self._schema)
        schema_required = schema is not None or (
            isinstance(response_format, dict) and response_format.get("type") == "json_schema"
        )
        request = Request(
            custom_id, line, _dumps(body), str(body.get("model", "")),
            estimate_prompt_tokens(messages), max_tokens, metadata, schema_required, schema,
        )
        fallbacks = body.get("models")
        if isinstance(fallbacks, list):
            request.models = tuple(m for m in fallbacks if isinstance(m, str))
        return request

    def _body_of(self, obj: dict[str, Any]) -> dict[str, Any]:
        if "body" in obj and ("url" in obj or "method" in obj):
            return self._batch_body(obj)
        if "messages" in obj:
            body = {**self._defaults, **{k: v for k, v in obj.items() if k not in _NOT_SENT}}
        elif "prompt" in obj:
            prompt = obj["prompt"]
            if not isinstance(prompt, str):
                raise _Bad(f"prompt must be a string, got {_json_type(prompt)}")
            rest = {k: v for k, v in obj.items() if k not in _NOT_SENT and k != "prompt"}
            body = {**self._defaults, **rest, "messages": [{"role": "user", "content": prompt}]}
        elif self._template is not None:
            body = {**self._defaults, "messages": [{"role": "user", "content": self._fill(obj)}]}
        else:
            raise _Bad("no messages or prompt, and no template (template = or --template) to fill from the row")
        _first_of_own_models(body, obj)
        _check_body(body)
        self._add_system(body)
        return body

    def _kept(self, obj: dict[str, Any], metadata: Any) -> Any:
        kept = {name: obj[name] for name in self._keep_fields if name in obj}
        if not kept:
            return metadata
        if metadata is None:
            return kept
        if isinstance(metadata, dict):
            return {**metadata, **kept}
        return {"metadata": metadata, **kept}

    def _row_body(self, row: dict[str, Any]) -> dict[str, Any]:
        # A table row is data: its columns fill the template (or give the prompt), never the body.
        if "prompt" in row and self._template is None:
            messages = [{"role": "user", "content": row["prompt"]}]
        elif self._template is not None:
            messages = [{"role": "user", "content": self._fill(row)}]
        else:
            raise _Bad("rows need a template (--template, or template = \"... {column} ...\" in the "
                       "job file) or a prompt column")
        body = {**self._defaults, "messages": messages}
        _check_body(body)
        self._add_system(body)
        return body

    def _add_system(self, body: dict[str, Any]) -> None:
        if self._system is not None and not any(
            isinstance(m, dict) and m.get("role") in ("system", "developer") for m in body["messages"]
        ):
            body["messages"] = [{"role": "system", "content": self._system}, *body["messages"]]

    def _batch_body(self, obj: dict[str, Any]) -> dict[str, Any]:
        """An OpenAI Batch API line's body, sent as written: no job system prompt or [params].

        Such a file is a finished request set (written for OpenAI's Batch API or ``vllm run-batch``)
        and must mean here what it means there, so the job adds nothing to it, except a ``model``
        when the body names none (and lists no ``models``): no server answers without one, and the
        job's model (--model) is the one the user asked for.
        """
        method = obj.get("method", "POST")
        url = obj.get("url", "/v1/chat/completions")
        if not isinstance(method, str) or method.upper() != "POST":
            raise _Bad(f"method must be POST, got {method!r}")
        if url not in _CHAT_PATHS:
            raise _Bad(f"url {url!r} is not served: batchrun sends chat completions (/v1/chat/completions)")
        body = obj["body"]
        if not isinstance(body, dict):
            raise _Bad(f"body must be a JSON object, got {_json_type(body)}")
        if "messages" not in body:
            raise _Bad("body has no messages")
        body = dict(body)
        if "model" not in body:
            body["model"] = self._defaults["model"]
            _first_of_own_models(body, obj["body"])
        _check_body(body)
        return body

    def _fill(self, row: dict[str, Any]) -> str:
        assert self._template is not None
        try:
            return self._formatter.vformat(self._template, (), row)
        except LookupError as exc:
            raise _Bad(f"template field {{{exc.args[0]}}} is missing from this row") from exc
        except (ValueError, IndexError) as exc:
            raise _Bad(f"template cannot be filled from this row: {exc}") from exc


class _Bad(Exception):
    pass


# 19 digits in a row may be an integer beyond 64 bits. Found by mapping every digit to "9" and
# looking for nineteen of them: ~10x faster than the regex \d{19}, which tries every position.
_ALL_DIGITS_TO_9 = bytes.maketrans(b"0123456789", b"9999999999")
_NINETEEN_DIGITS = b"9" * 19


def _has_long_number(raw: bytes) -> bool:
    return _NINETEEN_DIGITS in raw.translate(_ALL_DIGITS_TO_9)


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits: the standard library writes them exactly
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _lenient_json(raw: bytes, line: int) -> Any:
    # The standard parser reads what orjson refuses on purpose: integers beyond 64 bits, NaN.
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return InvalidLine(line, f"not valid UTF-8 (byte {exc.start}): save the file as UTF-8")
    except json.JSONDecodeError as exc:
        return InvalidLine(line, f"not valid JSON: {exc.msg} at column {exc.colno}")
    except RecursionError:
        return InvalidLine(line, "not valid JSON: nested too deeply")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _first_of_own_models(body: dict[str, Any], line: Mapping[str, Any]) -> None:
    """A line that lists ``models`` but names no ``model`` is served by its list, not the job's default.

    OpenRouter tries ``model`` first, so the job's default model added to such a line would serve
    it and the line's own list would never be used.
    """
    models = line.get("models")
    if "model" not in line and isinstance(models, list) and models and isinstance(models[0], str):
        body["model"] = models[0]


def _check_body(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Bad("messages must be a non-empty array")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _Bad(f"messages[{index}] must be an object with a string role")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise _Bad(f"messages[{index}].content must be a string or an array of parts")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _Bad("model must be a non-empty string")
    for key in _POSITIVE_INT_PARAMS:
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise _Bad(f"{key} must be a positive integer, got {value!r}")
    for key in _INT_PARAMS:
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise _Bad(f"{key} must be a non-negative integer, got {value!r}")
    for key in _NUMBER_PARAMS:
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _Bad(f"{key} must be a number, got {value!r}")


_last_stamp: tuple[int, str] = (0, "")


def _now_iso() -> str:
    global _last_stamp
    second = int(time.time())
    if second != _last_stamp[0]:
        _last_stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
    return _last_stamp[1]


_ids = random.Random()  # seeded from os.urandom; record ids need to be unique, not secret


def _record_id() -> str:
    return f"batch_req_{_ids.getrandbits(96):024x}"  # no system call per record, unlike os.urandom


def success_record(
    request: Request, raw_body: bytes, body: dict[str, Any], usage: dict[str, Any], latency_s: float,
    *, parsed: Any = None, ttft_s: float | None = None,
) -> dict[str, Any]:
    """The results-file line of a success; ``raw_body`` is the provider's JSON, embedded as is.

    ``parsed`` is the reply's JSON object as ``schema.validate_reply`` returned it; the record
    has a ``parsed`` key whenever the request required a schema. ``ttft_s`` (time to first token)
    is known for streamed replies only, and null otherwise.
    """
    record = {
        "id": _record_id(),
        "custom_id": request.custom_id,
        "response": {
            "status_code": 200,
            "request_id": body.get("id"),
            "body": orjson.Fragment(raw_body),
        },
        "error": None,
        "usage": usage,
        "billed_usd": request.billed_usd,
        "model": body.get("model") or request.model,
        "provider": body.get("provider"),
        "attempts": request.attempts,
        "latency_s": round(latency_s, 4),
        "ttft_s": None if ttft_s is None else round(ttft_s, 4),
        "finished_at": _now_iso(),
        "metadata": request.metadata,
    }
    if request.schema_required or parsed is not None:
        record["parsed"] = parsed
    return record


def error_record(
    custom_id: str,
    line: int,
    kind: str,
    message: str,
    *,
    status: int | None = None,
    body: Any = None,
    usage: dict[str, Any] | None = None,
    request: Request | None = None,
    latency_s: float | None = None,
    metadata: Any = None,
) -> dict[str, Any]:
    """The errors-file line of an id that failed (or of a bad input line)."""
    request_id = body.get("id") if isinstance(body, dict) else None
    return {
        "id": _record_id(),
        "custom_id": custom_id,
        "response": None if status is None else {
            "status_code": status, "request_id": request_id, "body": body,
        },
        "error": {"code": kind, "message": message, "status": status, "line": line},
        "usage": usage,
        "billed_usd": request.billed_usd if request else 0.0,
        "model": (body.get("model") if isinstance(body, dict) else None) or (request.model if request else None),
        "provider": body.get("provider") if isinstance(body, dict) else None,
        "attempts": request.attempts if request else 0,
        "latency_s": None if latency_s is None else round(latency_s, 4),
        "finished_at": _now_iso(),
        "metadata": request.metadata if request else metadata,
    }

