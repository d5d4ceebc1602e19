"""Classify one HTTP outcome into an error kind, and choose how long to wait before a retry.

Pure functions only: no I/O, no clock of their own (``now`` is passed in), so every rule is
table-tested in ``tests/test_retry.py``. The rules follow docs/design.md §4 and docs/openrouter-wire.md §1, §2, §7.
"""

from __future__ import annotations

import email.utils
import math
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from batchrun.errors import ErrorKind

__all__ = [
    "Verdict",
    "backoff",
    "classify_response",
    "names_upstream",
    "own_limit",
    "parse_duration",
    "parse_retry_after",
    "retry_wait",
]

_WHITESPACE = b" \t\r\n"
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_MODEL_GONE = re.compile(
    # "No endpoints found for X." is the model; "No endpoints found that support tool use" or
    # "No allowed providers..." are one request's parameters, and stop only that line.
    r"not a valid model id|no endpoints found for\b|model[_ ]not[_ ]found|model[_ ]deprecated|"
    r"does not exist|model (?:\S+ )?is not available|has been deprecated",
    re.IGNORECASE,
)
_MODEL_AVAILABILITY_CODES = frozenset({"model_not_found", "model_deprecated", "model_retired"})
# How OpenRouter says a provider behind it refused this one request (wire §1, §2).
_UPSTREAM_TEXT = re.compile(r"rate-limited upstream|provider returned error", re.IGNORECASE)
_OWN_REMAINING = ("x-ratelimit-remaining", "x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one attempt came to: ``kind`` is None for a success."""

    kind: str | None
    message: str = ""
    body: Any = None  # the parsed JSON body, or the text of a non-JSON one
    retry_after: float | None = None  # seconds the server asked us to wait
    fallback_models: tuple[str, ...] = ()
    over_limit: bool = False  # the server says we hit the client's own limit: slow the whole pool
    upstream: bool = False  # a 429 from a busy provider behind the server: this request's alone



def classify_response(
    status: int,
    headers: Mapping[str, str],
    raw: bytes,
    *,
    schema_required: bool = False,
    now: float = 0.0,
) -> Verdict:
    """Turn a complete HTTP response into a verdict; ``now`` is the wall clock (epoch seconds)."""
    body = _parse_body(raw)
    if status == 200:
        return _classify_ok_status(body, schema_required)
    return _classify_error_status(status, _lowercase(headers), body, now)


def _parse_body(raw: bytes) -> Any:
    # OpenRouter may send whitespace heartbeats before the JSON of a non-streaming reply.
    stripped = raw.strip(_WHITESPACE)
    if stripped[:1] in (b"{", b"["):
        try:
            return orjson.loads(stripped)
        except orjson.JSONDecodeError:
            pass
    return stripped.decode("utf-8", "replace")


def _lowercase(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _error_of(body: Any) -> dict[str, Any]:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error: dict[str, Any] = body["error"]
        return error
    return {}


def _dict_at(mapping: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


def _message_of(body: Any, fallback: str) -> str:
    error = _error_of(body)
    message = error.get("message")
    if isinstance(message, str) and message:
        metadata = error.get("metadata")
        raw = metadata.get("raw") if isinstance(metadata, dict) else None
        if isinstance(raw, str) and raw and message == "Provider returned error":
            return f"{message}: {raw[:300]}"
        return message
    if isinstance(body, dict) and isinstance(body.get("detail"), str) and body["detail"]:
        return str(body["detail"][:300])  # FastAPI's error shape (llama-cpp-python's server, many proxies)
    if isinstance(body, str) and body:
        if body.lstrip()[:1] == "<":
            return f"{fallback} (an HTML page, likely from a proxy)"
        return body[:300]
    return fallback


def _classify_ok_status(body: Any, schema_required: bool) -> Verdict:
    if not isinstance(body, dict):
        return Verdict(ErrorKind.PROVIDER_ERROR, "HTTP 200 with a body that is not a JSON object", body)
    if body.get("error"):
        code = _error_of(body).get("code")
        message = "HTTP 200 with an error: " + _message_of(body, "provider error")
        if code in (429, "429"):
            # The server had accepted the request: a 429 now is the provider's, this request's alone.
            return Verdict(ErrorKind.RATE_LIMITED, message, body, upstream=True)
        return Verdict(ErrorKind.PROVIDER_ERROR, message, body)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return Verdict(ErrorKind.PROVIDER_ERROR, "HTTP 200 with no choices (empty reply)", body)
    choice = choices[0]
    finish = choice.get("finish_reason")
    if finish == "error":
        message = _dict_at(choice, "error").get("message") or "the provider stopped with finish_reason 'error'"
        return Verdict(ErrorKind.PROVIDER_ERROR, f"finish_reason 'error': {message}", body)
    if finish == "content_filter":
        return Verdict(ErrorKind.CONTENT_FILTERED, "the reply was stopped by a content filter", body)
    if finish is None:
        return Verdict(ErrorKind.PROVIDER_ERROR, "HTTP 200 with no finish_reason (incomplete)", body)
    if finish == "length" and schema_required:
        return Verdict(
            ErrorKind.INVALID_OUTPUT, "reply cut off by max_tokens (finish_reason 'length')", body
        )
    return Verdict(None, "", body)


def _classify_error_status(
    status: int, headers: dict[str, str], body: Any, now: float
) -> Verdict:
    error = _error_of(body)
    metadata = _dict_at(error, "metadata")
    availability = _dict_at(error, "availability")
    message = _message_of(body, f"HTTP {status}")
    text = f"{message} {error.get('code', '')} {metadata.get('limit_source', '')}".lower()
    wait = parse_retry_after(headers, body, now)

    if status == 429:
        if "insufficient_quota" in text or "free-models-per-day" in text:
            return Verdict(ErrorKind.INSUFFICIENT_CREDITS, message, body, wait)
        upstream = names_upstream(message, metadata)
        own = not upstream and own_limit(headers, error, text)
        return Verdict(ErrorKind.RATE_LIMITED, message, body, wait, over_limit=own, upstream=upstream)
    if status == 402:
        if "in_flight" in text or "in-flight" in text:
            return Verdict(ErrorKind.RATE_LIMITED, message, body, wait, over_limit=True)
        return Verdict(ErrorKind.INSUFFICIENT_CREDITS, message, body)
    if status == 401:
        return Verdict(ErrorKind.AUTH_ERROR, message, body)
    if status == 403:
        if "reasons" in metadata or "flagged_input" in metadata:
            return Verdict(ErrorKind.CONTENT_FILTERED, message, body)
        return Verdict(ErrorKind.AUTH_ERROR, message, body)
    if status in (400, 404):
        if availability.get("retryable") is True:
            return Verdict(ErrorKind.SERVER_ERROR, message, body, wait)
        if (
            availability.get("code") in _MODEL_AVAILABILITY_CODES
            or metadata.get("error_type") in _MODEL_AVAILABILITY_CODES
            or _MODEL_GONE.search(message)
        ):
            fallbacks = availability.get("fallback_models") or metadata.get("fallback_models") or ()
            models = tuple(m for m in fallbacks if isinstance(m, str))
            return Verdict(ErrorKind.MODEL_UNAVAILABLE, message, body, fallback_models=models)
        return Verdict(ErrorKind.INVALID_REQUEST, message, body)
    if status in (408, 409) or status >= 500:
        return Verdict(ErrorKind.SERVER_ERROR, message, body, wait)
    return Verdict(ErrorKind.INVALID_REQUEST, message, body)


def names_upstream(message: str, metadata: Mapping[str, Any]) -> bool:
    """Whether a 429 names a provider behind the server as the one that refused.

    OpenRouter relays a busy provider's refusal as "<model> is temporarily rate-limited upstream"
    or "Provider returned error", with ``metadata.provider_name``, ``metadata.raw`` (the
    provider's own body) and often ``limit_source: "upstream_provider_shared_pool"``. Such a 429
    says that provider is busy for this request, not how fast this key may send: it often carries
    X-RateLimit-* values copied from elsewhere, ``Remaining: 0`` included, which must not slow
    the pool.
    """
    source = metadata.get("limit_source")
    if isinstance(source, str) and source.lower().startswith("upstream"):
        return True
    if metadata.get("provider_name") or metadata.get("raw"):
        return True
    return bool(_UPSTREAM_TEXT.search(message))


def own_limit(headers: Mapping[str, str], error: Mapping[str, Any], text: str) -> bool:
    """Whether a 429 (that names no upstream source) is the client's own limit.

    The signals: OpenRouter's ``:free`` per-minute cap ("free-models-per-min"), a remaining
    count of 0 in ``X-RateLimit-Remaining`` (in the headers or ``error.metadata.headers``), or
    OpenAI's ``x-ratelimit-remaining-requests`` / ``-tokens`` at 0. ``headers`` must have
    lower-case names; ``text`` is the lower-cased message, code and limit source.
    """
    if "free-models-per-min" in text:
        return True
    inner = _dict_at(error, "metadata").get("headers")
    inner = _lowercase(inner) if isinstance(inner, dict) else {}
    return any(
        str(source.get(name, "")).strip() == "0" for source in (headers, inner) for name in _OWN_REMAINING
    )


def parse_retry_after(headers: Mapping[str, str], body: Any, now: float) -> float | None:
    """Seconds to wait as the server asked, from headers or the error body; None if it did not say.

    ``headers`` must have lower-case names. Precedence (after openai-python): ``retry-after-ms``,
    ``retry-after`` (seconds or an HTTP date), ``x-ratelimit-reset`` (OpenRouter: epoch ms),
    OpenAI's ``x-ratelimit-reset-requests`` / ``-tokens`` (Go durations such as ``6m0s``), then
    the body's ``availability.retry_after`` and ``metadata.headers.X-RateLimit-Reset``.
    """
    value = headers.get("retry-after-ms")
    if value is not None:
        seconds = _number(value)
        if seconds is not None:
            return max(seconds / 1000.0, 0.0)
    value = headers.get("retry-after")
    if value is not None:
        seconds = _number(value)
        if seconds is None:
            seconds = _http_date_delay(value, now)
        if seconds is not None:
            return max(seconds, 0.0)
    value = headers.get("x-ratelimit-reset")
    if value is not None and (seconds := _reset_delay(value, now)) is not None:
        return seconds
    openai_resets = [
        parse_duration(headers[name])
        for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
        if name in headers
    ]
    found = [s for s in openai_resets if s is not None]
    if found:
        return max(found)
    error = _error_of(body)
    availability = error.get("availability")
    if isinstance(availability, dict):
        seconds = _number(availability.get("retry_after"))
        if seconds is not None:
            return max(seconds, 0.0)
    metadata = error.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("headers"), dict):
        inner = _lowercase(metadata["headers"])
        if "x-ratelimit-reset" in inner:
            return _reset_delay(str(inner["x-ratelimit-reset"]), now)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _http_date_delay(value: str, now: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - now


def _reset_delay(value: str, now: float) -> float | None:
    number = _number(value)
    if number is None:
        return parse_duration(value)
    if number > 1e11:  # epoch milliseconds, as OpenRouter sends
        return max(number / 1000.0 - now, 0.0)
    if number > 1e9:  # epoch seconds
        return max(number - now, 0.0)
    return max(number, 0.0)  # already a delay in seconds


def parse_duration(value: str) -> float | None:
    """Parse a Go duration such as ``6m0s``, ``17.203s`` or ``12ms`` into seconds."""
    value = value.strip()
    if not value:
        return None
    number = _number(value)
    if number is not None:
        return max(number, 0.0)
    position, total = 0, 0.0
    for match in _GO_DURATION.finditer(value):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        position = match.end()
    return total if position == len(value) else None


def backoff(
    attempt: int, *, base: float = 0.5, cap: float = 30.0, rng: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**(attempt-1)))."""
    return rng() * min(cap, base * 2.0 ** min(max(attempt - 1, 0), 64))  # 2.0**1024 overflows


def retry_wait(
    verdict: Verdict,
    attempt: int,
    *,
    base: float = 0.5,
    cap: float = 30.0,
    rng: Callable[[], float] = random.random,
) -> float:
    """How long to wait before the next attempt: the server's hint when it gave one, else backoff."""
    if verdict.retry_after is not None:
        return verdict.retry_after
    return backoff(attempt, base=base, cap=cap, rng=rng)
