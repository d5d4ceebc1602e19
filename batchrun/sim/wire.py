"""Body and header builders for each dialect: errors, injected faults, completions and chunks."""

from __future__ import annotations

import math
import time
from typing import Any

import orjson

from .catalog import Model

__all__ = [
    "USER_ID",
    "ErrorReply",
    "UpstreamHeaderStyles",
    "credits_reply",
    "error_reply",
    "fault_reply",
    "format_retry_after",
    "go_duration",
]

USER_ID = "user_sim"

# OpenAI-style (type, code) per status; OpenAI's `code` is a string where OpenRouter's is an int.
_OPENAI_KINDS = {
    400: ("invalid_request_error", "invalid_request_error"),
    401: ("invalid_request_error", "invalid_api_key"),
    402: ("insufficient_quota", "insufficient_quota"),
    403: ("invalid_request_error", "content_filter"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}

_HTML_502 = b"""<!DOCTYPE html>
<html lang="en-US">
<head><title>openrouter.ai | 502: Bad gateway</title></head>
<body>
<div id="cf-error-details">
<h1><span class="cf-error-type">Bad gateway</span> <span class="cf-error-code">Error code 502</span></h1>
<p>The web server reported a bad gateway error.</p>
<p>Cloudflare Ray ID: <strong>8f0c5a1b2c3d4e5f</strong></p>
</div>
</body>
</html>
"""


class ErrorReply:
    """A complete non-2xx (or error-200) answer: status, extra headers, body and content type."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.content_type = content_type


def format_retry_after(seconds: float) -> str:
    """Format a Retry-After value: whole seconds as an integer, else up to millisecond precision."""
    if seconds <= 0:
        return "0"
    ms = math.ceil(seconds * 1000 - 1e-6)
    if ms % 1000 == 0:
        return str(ms // 1000)
    return f"{ms / 1000:.3f}".rstrip("0").rstrip(".")


def go_duration(seconds: float) -> str:
    """Format seconds as a Go duration string, the way OpenAI's reset headers do (`6m0s`, `12ms`)."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    ms = round(seconds * 1000)
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs


def error_reply(
    dialect: str,
    status: int,
    message: str,
    metadata: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    openai_code: str | None = None,
    openai_type: str | None = None,
    extra: dict[str, Any] | None = None,
) -> ErrorReply:
    """Build an error answer in the dialect's body shape."""
    if dialect == "openai":
        default_type, default_code = _OPENAI_KINDS.get(status, ("server_error", "server_error"))
        err: dict[str, Any] = {
            "message": message,
            "type": openai_type or default_type,
            "param": None,
            "code": openai_code or default_code,
        }
        return ErrorReply(status, orjson.dumps({"error": err}), headers)
    err = {"code": status, "message": message}
    if dialect == "plain":
        err["type"] = "server_error" if status >= 500 else "invalid_request_error"
        return ErrorReply(status, orjson.dumps({"error": err}), headers)
    if metadata is not None:
        err["metadata"] = metadata
    if extra:
        err.update(extra)
    doc: dict[str, Any] = {"error": err}
    if status != 401:
        doc["user_id"] = USER_ID
    return ErrorReply(status, orjson.dumps(doc), headers)


def _raw(status: int, message: str) -> str:
    # Upstream bodies arrive as a JSON *string* inside metadata.raw (wire §1).
    return orjson.dumps({"error": {"code": status, "message": message}}).decode()


class UpstreamHeaderStyles:
    """The header style of each upstream 429 in turn: one fixed style, or ``mix``'s three rotating."""

    _ROTATION = ("retry-after", "ratelimit", "metadata")

    def __init__(self, mode: str) -> None:
        self._mode = mode
        self._count = 0

    def next(self) -> str:
        """The style of the next upstream 429."""
        if self._mode != "mix":
            return self._mode
        style = self._ROTATION[self._count % len(self._ROTATION)]
        self._count += 1
        return style

    def reset(self) -> None:
        """Start the rotation again."""
        self._count = 0


def _upstream_limits(retry_after_s: float, now: float) -> dict[str, str]:
    # The X-RateLimit-* values OpenRouter copies into an upstream 429: Remaining is 0 and Reset
    # is epoch milliseconds (wire §2), though they say nothing about the client's own rate.
    return {
        "X-RateLimit-Limit": "1000",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(math.ceil((now + retry_after_s) * 1000)),
    }


def fault_reply(
    kind: str,
    dialect: str,
    model: Model,
    retry_after_s: float,
    flagged: str,
    *,
    header_style: str = "retry-after",
    now: float | None = None,
) -> ErrorReply | None:
    """Return the answer for a fault that replaces generation, or None for in-generation faults.

    ``header_style`` is how the "429" fault carries its limits (config.UPSTREAM_429_HEADERS,
    not ``mix``); ``now`` is the wall clock for its reset time (default: ``time.time()``).
    """
    ra = {"Retry-After": format_retry_after(retry_after_s)}
    provider = model.provider
    meta: dict[str, Any]
    if kind == "429":
        msg = (
            f"{model.id} is temporarily rate-limited upstream. Please retry shortly, or add your "
            "own key to accumulate your rate limits: https://openrouter.ai/settings/integrations"
        )
        meta = {
            "raw": msg,
            "provider_name": provider,
            "limit_source": "upstream_provider_shared_pool",
            "remedy_hint": "retry_after_delay",
        }
        headers = dict(ra)
        if header_style in ("ratelimit", "metadata"):
            limits = _upstream_limits(retry_after_s, time.time() if now is None else now)
            if header_style == "ratelimit":
                headers.update(limits)
            else:
                meta["headers"] = {**ra, **limits}
        return error_reply(dialect, 429, msg, meta, headers=headers)
    if kind == "500":
        return error_reply(dialect, 500, "Internal Server Error")
    if kind == "502":
        meta = {
            "raw": _raw(502, "Bad gateway: upstream connection reset"),
            "provider_name": provider,
        }
        return error_reply(dialect, 502, "Provider returned error", meta)
    if kind == "503":
        meta = {
            "raw": _raw(503, "The model is overloaded. Please try again later."),
            "provider_name": provider,
        }
        return error_reply(dialect, 503, "Provider returned error", meta, headers=ra)
    if kind == "504":
        meta = {"error_type": "timeout", "provider_name": provider}
        return error_reply(
            dialect, 504, "Gateway Timeout: the provider did not answer in time", meta
        )
    if kind == "524":
        meta = {"error_type": "timeout", "provider_name": provider}
        return error_reply(dialect, 524, "Provider timed out (Cloudflare 524)", meta)
    if kind == "html502":
        return ErrorReply(502, _HTML_502, content_type="text/html")
    if kind == "inflight402":
        msg = (
            "This request requires more credits than are available given your current in-flight "
            "requests. Retry after in-flight requests settle."
        )
        return error_reply(
            dialect, 402, msg, {"limit_source": "openrouter_in_flight_budget"}, headers=ra
        )
    if kind == "credits402":
        return credits_reply(dialect)
    if kind == "moderation403":
        meta = {
            "reasons": ["harassment"],
            "flagged_input": flagged[:100],
            "provider_name": provider,
            "model_slug": model.id,
        }
        msg = f'{model.id} requires moderation on {provider}. Your input was flagged for "harassment".'
        return error_reply(dialect, 403, msg, meta)
    if kind == "auth401":
        return error_reply(dialect, 401, "User not found.")
    return None


def credits_reply(
    dialect: str, message: str | None = None, source: str = "openrouter_credits"
) -> ErrorReply:
    """Build the non-retryable 402 for exhausted credits (OpenAI: 429 insufficient_quota)."""
    msg = message or (
        "Insufficient credits. This account never purchased credits or has run out. "
        "Make sure your key is on the correct account and add more at https://openrouter.ai/settings/credits"
    )
    if dialect == "openai":
        return error_reply(
            dialect,
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            openai_code="insufficient_quota",
            openai_type="insufficient_quota",
        )
    return error_reply(dialect, 402, msg, {"limit_source": source})
