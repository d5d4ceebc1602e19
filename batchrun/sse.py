"""Reading a streamed chat completion: SSE bytes in, one chat.completion body out. Pure.

Feed the assembler the body as it arrives, in chunks cut anywhere (a CRLF, a UTF-8 character or
a JSON document may straddle two chunks); at the end ``result()`` gives the body a non-streamed
request would have got, so the rest of batchrun (classification, cost, records) sees no
difference. What the wire does (docs/openrouter-wire.md §4): ``data: <json>`` events separated by a
blank line, keep-alive comments (``: OPENROUTER PROCESSING``) anywhere, the usage in a last
chunk whose ``choices`` is ``[]``, missing or a choice with ``finish_reason: null``, then
``data: [DONE]``; an error after the first token arrives as a chunk with an ``error`` key and
``finish_reason: "error"``, under the HTTP 200 already sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from batchrun.errors import ErrorKind
from batchrun.retry import classify_response

__all__ = ["StreamAssembler"]

_DONE = b"[DONE]"


class _Choice:
    __slots__ = (
        "content", "finish_reason", "logprobs", "native_finish_reason", "reasoning",
        "reasoning_details", "refusal", "role", "saw_content", "tool_calls",
    )

    def __init__(self) -> None:
        self.role = "assistant"
        self.content: list[str] = []
        self.saw_content = False
        self.reasoning: list[str] = []
        self.reasoning_details: list[Any] = []
        self.refusal: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.logprobs: list[Any] | None = None
        self.finish_reason: str | None = None
        self.native_finish_reason: str | None = None

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": self.role,
            "content": "".join(self.content) if self.saw_content else None,
        }
        if self.reasoning:
            message["reasoning"] = "".join(self.reasoning)
        if self.reasoning_details:
            message["reasoning_details"] = self.reasoning_details
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        if self.tool_calls:
            calls = []
            for index in sorted(self.tool_calls):
                call = self.tool_calls[index]
                function = call["function"]
                calls.append({
                    **{k: v for k, v in call.items() if k != "function"},
                    "function": {"name": "".join(function["name"]),
                                 "arguments": "".join(function["arguments"])},
                })
            message["tool_calls"] = calls
        return message


class StreamAssembler:
    """Assembles one streamed chat completion from SSE bytes fed in arbitrary chunks.

    ``clock`` (default ``time.monotonic``) stamps each ``feed`` unless the caller passes
    ``now``; ``started`` is when the request was sent (default: when the assembler was made).
    ``ttft_s`` is then the time from ``started`` to the feed that brought the first delta with
    content, reasoning or a tool call.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, started: float | None = None):
        self._clock = clock
        self.started = clock() if started is None else started
        self.first_token_at: float | None = None
        self.done = False  # data: [DONE] was seen
        self.events = 0  # data events parsed (comments and [DONE] excluded)
        self.bytes_received = 0
        self._pending = b""  # the start of a line whose end has not arrived
        self._data: list[bytes] = []  # data lines of the event being read
        self._head: dict[str, Any] = {}
        self._choices: dict[int, _Choice] = {}
        self._usage: Any = None
        self._error: Any = None
        self._bad_event: str | None = None
        self._now = self.started

    @property
    def ttft_s(self) -> float | None:
        """Seconds from ``started`` to the first token, or None before any arrived."""
        return None if self.first_token_at is None else self.first_token_at - self.started

    # -- reading ---------------------------------------------------------------------------

    def feed(self, chunk: bytes, now: float | None = None) -> None:
        """Take the next bytes of the response body, wherever they were cut."""
        if not chunk:
            return
        self.bytes_received += len(chunk)
        self._now = self._clock() if now is None else now
        buffer = self._pending + chunk
        start = 0
        length = len(buffer)
        while start < length:
            lf = buffer.find(b"\n", start)
            cr = buffer.find(b"\r", start, lf if lf >= 0 else length)
            if cr >= 0:
                if cr == length - 1:
                    break  # a CR at the very end: its LF may be in the next chunk
                end, after = cr, cr + 2 if buffer[cr + 1:cr + 2] == b"\n" else cr + 1
            elif lf >= 0:
                end, after = lf, lf + 1
            else:
                break
            self._line(buffer[start:end])
            start = after
        self._pending = buffer[start:]

    def _line(self, line: bytes) -> None:
        if self.done:
            return
        if not line:
            self._dispatch()
        elif line.startswith(b":"):
            pass  # a comment: the keep-alive ": OPENROUTER PROCESSING"
        elif line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        # other fields (event:, id:, retry:) carry nothing a chat completion needs

    def _dispatch(self) -> None:
        if not self._data:
            return
        data = b"\n".join(self._data)
        self._data = []
        if data.strip() == _DONE:
            self.done = True
            return
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            self._bad_event = self._bad_event or f"a stream event is not JSON ({exc.msg}): {data[:60]!r}"
            return
        if not isinstance(doc, dict):
            self._bad_event = self._bad_event or "a stream event is not a JSON object"
            return
        self.events += 1
        self._take(doc)

    def _take(self, doc: dict[str, Any]) -> None:
        for key in ("id", "model", "provider", "created", "system_fingerprint"):
            if self._head.get(key) is None and doc.get(key) is not None:
                self._head[key] = doc[key]
        if doc.get("usage") is not None:
            self._usage = doc["usage"]
        if doc.get("error") is not None and self._error is None:
            self._error = doc["error"]
        choices = doc.get("choices")
        if not isinstance(choices, list):
            return
        for raw in choices:
            if not isinstance(raw, dict):
                continue
            index = raw.get("index", 0)
            choice = self._choices.get(index)
            if choice is None:
                choice = self._choices[index] = _Choice()
            self._take_delta(choice, raw.get("delta"))
            logprobs = raw.get("logprobs")
            if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
                choice.logprobs = (choice.logprobs or []) + logprobs["content"]
            if raw.get("finish_reason") is not None:
                choice.finish_reason = raw["finish_reason"]
            if raw.get("native_finish_reason") is not None:
                choice.native_finish_reason = raw["native_finish_reason"]
            if raw.get("error") is not None and self._error is None:
                self._error = raw["error"]

    def _take_delta(self, choice: _Choice, delta: Any) -> None:
        if not isinstance(delta, dict):
            return
        token = False
        if isinstance(delta.get("role"), str):
            choice.role = delta["role"]
        content = delta.get("content")
        if isinstance(content, str):
            choice.saw_content = True
            if content:
                choice.content.append(content)
                token = True
        reasoning = delta.get("reasoning", delta.get("reasoning_content"))
        if isinstance(reasoning, str) and reasoning:
            choice.reasoning.append(reasoning)
            token = True
        if isinstance(delta.get("reasoning_details"), list):
            choice.reasoning_details.extend(delta["reasoning_details"])
        if isinstance(delta.get("refusal"), str):
            choice.refusal.append(delta["refusal"])
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict):
                    self._take_tool_call(choice, call)
                    token = True
        if token and self.first_token_at is None:
            self.first_token_at = self._now

    @staticmethod
    def _take_tool_call(choice: _Choice, call: dict[str, Any]) -> None:
        index = call.get("index", len(choice.tool_calls))
        merged = choice.tool_calls.get(index)
        if merged is None:
            merged = choice.tool_calls[index] = {"function": {"name": [], "arguments": []}}
        for key, value in call.items():
            if key == "function" and isinstance(value, dict):
                if isinstance(value.get("name"), str):
                    merged["function"]["name"].append(value["name"])
                if isinstance(value.get("arguments"), str):
                    merged["function"]["arguments"].append(value["arguments"])
            elif value is not None and key not in merged:
                merged[key] = value  # id, type, index: sent once, on the call's first delta

    # -- the end ---------------------------------------------------------------------------

    def body(self) -> dict[str, Any]:
        """The chat.completion body assembled from what arrived so far."""
        body: dict[str, Any] = {
            "id": self._head.get("id"),
            "object": "chat.completion",
            "created": self._head.get("created"),
            "model": self._head.get("model"),
        }
        if "provider" in self._head:
            body["provider"] = self._head["provider"]
        if "system_fingerprint" in self._head:
            body["system_fingerprint"] = self._head["system_fingerprint"]
        choices = []
        for index in sorted(self._choices):
            choice = self._choices[index]
            out: dict[str, Any] = {
                "index": index,
                "message": choice.message(),
                "finish_reason": choice.finish_reason,
            }
            if choice.native_finish_reason is not None:
                out["native_finish_reason"] = choice.native_finish_reason
            out["logprobs"] = None if choice.logprobs is None else {"content": choice.logprobs}
            choices.append(out)
        body["choices"] = choices
        if self._usage is not None:
            body["usage"] = self._usage
        if self._error is not None:
            body["error"] = self._error
        return body

    def result(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """``(body, None)`` for a whole reply, else ``(body so far, error)``; call at end of stream.

        ``error`` is ``{"kind", "message", "status", "retry_after"}``: ``kind`` is an error kind
        of docs/design.md §4. A mid-stream error chunk is classified as its ``error.code`` would be as
        an HTTP status (502 → server_error, 429 → rate_limited, …); a stream cut off before a
        finish_reason is a ``connection_error``; one that ended (``[DONE]``) without a
        finish_reason or without any choice is a ``provider_error``.
        """
        if self._pending:
            # A last line without its line end (or whose CR was the last byte).
            pending, self._pending = self._pending, b""
            self._line(pending[:-1] if pending.endswith(b"\r") else pending)
        if self._data:
            self._dispatch()  # a last event without its blank line: keep it if it is whole
        body = self.body()
        first = self._choices.get(min(self._choices)) if self._choices else None
        if self._error is not None or (first is not None and first.finish_reason == "error"):
            return body, self._mid_stream_error(body)
        if first is None or first.finish_reason is None:
            if not self.done:
                return body, _error(
                    ErrorKind.CONNECTION_ERROR,
                    f"the stream was cut off before a finish_reason ({self.bytes_received:,} bytes, "
                    f"{self.events} events)",
                )
            what = "no choices" if first is None else "no finish_reason"
            return body, _error(ErrorKind.PROVIDER_ERROR, f"the stream ended with {what} (incomplete)")
        if self._bad_event is not None:
            return body, _error(ErrorKind.PROVIDER_ERROR, self._bad_event)
        return body, None

    def _mid_stream_error(self, body: dict[str, Any]) -> dict[str, Any]:
        error = self._error if isinstance(self._error, dict) else {}
        code = error.get("code")
        if isinstance(code, str) and code.isdigit():
            code = int(code)
        message = error.get("message") if isinstance(error.get("message"), str) else None
        message = message or "finish_reason 'error'"
        if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
            verdict = classify_response(code, {}, orjson.dumps({"error": error}), now=time.time())
            return _error(verdict.kind or ErrorKind.PROVIDER_ERROR,
                          f"error in the stream ({code}): {message}", code, verdict.retry_after)
        return _error(ErrorKind.PROVIDER_ERROR, f"error in the stream: {message}")


def _error(kind: str, message: str, status: int | None = None,
           retry_after: float | None = None) -> dict[str, Any]:
    return {"kind": kind, "message": message, "status": status, "retry_after": retry_after}
