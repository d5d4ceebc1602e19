"""A finished batch's rows → outcomes, and the batch's cost shared out over its rows. Pure.

A row comes in either shape (docs/batch-wire.md A6.2, B4): OpenRouter's ``error`` object, or OpenAI's
``response.status_code`` with an error body. Rows with a response are judged by the sync mode's
own ``retry.classify_response`` (an error inside a 200, a content filter, a cut-off reply...);
OpenRouter's row error types map onto the same kinds. A row marked expired or cancelled, or
missing from the results, never ran: it goes into a later batch without using up an attempt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from batchrun.errors import ErrorKind
from batchrun.pricing import Price
from batchrun.retry import Verdict, classify_response

__all__ = [
    "FailedBatch",
    "RowOutcome",
    "allocate_cost",
    "classify_row",
    "failed_batch",
    "failed_batch_index",
    "row_usage",
    "token_weight",
    "wire_index",
]

NOT_RUN_CODES = frozenset({"batch_expired", "batch_cancelled", "batch_failed", "not_executed"})

# OpenRouter's ApiErrorType values (A6.2), and OpenAI's error types, as batchrun's error kinds.
_ERROR_TYPES: Mapping[str, str] = {
    "rate_limit_exceeded": ErrorKind.RATE_LIMITED,
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "provider_overloaded": ErrorKind.SERVER_ERROR,
    "provider_unavailable": ErrorKind.SERVER_ERROR,
    "server": ErrorKind.SERVER_ERROR,
    "server_error": ErrorKind.SERVER_ERROR,
    "api_error": ErrorKind.SERVER_ERROR,
    "timeout": ErrorKind.TIMEOUT,
    "request_timeout": ErrorKind.TIMEOUT,
    "content_policy_violation": ErrorKind.CONTENT_FILTERED,
    "refusal": ErrorKind.CONTENT_FILTERED,
    "authentication": ErrorKind.AUTH_ERROR,
    "permission_denied": ErrorKind.AUTH_ERROR,
    "payment_required": ErrorKind.INSUFFICIENT_CREDITS,
    "unmapped": ErrorKind.PROVIDER_ERROR,
}
_STATUS_OF_KIND = {
    ErrorKind.RATE_LIMITED: 429, ErrorKind.SERVER_ERROR: 502, ErrorKind.TIMEOUT: 408,
    ErrorKind.CONTENT_FILTERED: 403, ErrorKind.AUTH_ERROR: 403, ErrorKind.INSUFFICIENT_CREDITS: 402,
}


@dataclass(frozen=True, slots=True)
class RowOutcome:
    """What one result row came to: ``ran`` False means the request never ran (not billed)."""

    ran: bool
    verdict: Verdict  # kind None: a success
    status: int | None  # the row's HTTP status, when it has one
    raw_body: bytes | None  # the provider's response body, for a success record
    usage: dict[str, Any] | None  # the row's own usage (token counts), when it has one


def wire_index(custom_id: Any, nonce: str) -> int | None:
    """The index in a submission of a row's wire custom_id; None when the id is not this nonce's."""
    if not isinstance(custom_id, str) or not custom_id.startswith(nonce + "-"):
        return None
    tail = custom_id[len(nonce) + 1:]
    return int(tail) if tail.isdigit() else None


def classify_row(row: Mapping[str, Any], *, now: float = 0.0) -> RowOutcome:
    """Judge one result row (either provider's shape) as the sync mode judges one reply."""
    response = row.get("response")
    error = row.get("error")
    if isinstance(response, Mapping) and isinstance(response.get("status_code"), int):
        status = int(response["status_code"])
        body = response.get("body")
        raw = orjson.dumps(body) if body is not None else b""
        usage = body.get("usage") if isinstance(body, Mapping) else None
        usage = dict(usage) if isinstance(usage, Mapping) else None
        if 200 <= status < 300 and not error:
            return RowOutcome(True, classify_response(200, {}, raw, now=now), status, raw, usage)
        verdict = classify_response(status if status >= 300 else 502, {}, raw, now=now)
        return RowOutcome(True, verdict, status, None, usage)
    if not isinstance(error, Mapping):
        return RowOutcome(True, Verdict(ErrorKind.PROVIDER_ERROR, "a result row with neither a "
                                        "response nor an error"), None, None, None)
    code = str(error.get("code") or "")
    message = str(error.get("message") or code or "the batch row failed")
    if code in NOT_RUN_CODES:
        return RowOutcome(False, Verdict(ErrorKind.PROVIDER_ERROR, message), None, None, None)
    kind = None
    for key in (error.get("error_type"), error.get("code"), error.get("type")):
        if isinstance(key, str) and key in _ERROR_TYPES:
            kind = _ERROR_TYPES[key]
            break
    if kind is None:
        kind = ErrorKind.INVALID_REQUEST if str(error.get("type")).startswith("invalid") \
            or error.get("error_type") is not None else ErrorKind.PROVIDER_ERROR
    body = {"error": dict(error)}
    return RowOutcome(True, Verdict(kind, message, body), _STATUS_OF_KIND.get(kind, 400), None, None)


_WIRE_ID = re.compile(r"([0-9a-f]+)-(\d+)")


def failed_batch_index(message: str, nonce: str) -> int | None:
    """The index of the request a failed batch's error message names ("Batch request '<id>' ...")."""
    for match in _WIRE_ID.finditer(message or ""):
        if match.group(1) == nonce:
            return int(match.group(2))
    return None


# OpenAI's validation codes of a failed batch (batch-wire B3): some name a bad line, some the batch.
_LINE_CODES = frozenset({
    "invalid_json_line", "duplicate_custom_id", "missing_required_parameter", "mismatched_model",
    "invalid_url", "streaming_unsupported",
})
_MODEL_CODES = frozenset({"model_not_found"})
_NO_BATCH_MODEL = re.compile(r"not supported by the batch api|does not have (?:an eligible )?:batch endpoint",
                             re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class FailedBatch:
    """Why a batch failed before running anything: one bad line, its model, or the whole batch."""

    scope: str  # "line": ``index`` is refused; "model": no batch for it; "batch": try again later
    index: int | None
    message: str


def failed_batch(message: str, errors: Sequence[Mapping[str, Any]], nonce: str) -> FailedBatch:
    """Read a failed batch's ``error.message`` (OpenRouter) or ``errors.data`` (OpenAI)."""
    first = errors[0] if errors else {}
    code = str(first.get("code") or "")
    text = message or str(first.get("message") or "") or "the batch failed"
    if code in _MODEL_CODES or _NO_BATCH_MODEL.search(text):
        return FailedBatch("model", None, text)
    index = failed_batch_index(text, nonce)
    if index is None and code in _LINE_CODES:
        line = first.get("line")
        index = line - 1 if isinstance(line, int) and not isinstance(line, bool) and line > 0 else None
    if index is not None:
        return FailedBatch("line", index, text)
    return FailedBatch("batch", None, text)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def token_weight(usage: Mapping[str, Any] | None, price: Price | None) -> float:
    """A row's share of its batch's bill: its tokens at the batch price (plain tokens without one)."""
    if not usage:
        return 0.0
    prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    if price is None:
        return float(prompt + completion)
    return prompt * price.prompt + completion * price.completion


def allocate_cost(total: float, weights: Sequence[float]) -> list[float]:
    """Share ``total`` out in proportion to ``weights``; the shares add up to ``total``.

    Equal shares when no row has weight; the last share takes the rounding remainder.
    """
    if not weights:
        return []
    whole = sum(weights)
    if whole <= 0:
        weights, whole = [1.0] * len(weights), float(len(weights))
    shares = [total * weight / whole for weight in weights]
    shares[-1] = total - sum(shares[:-1])
    return shares


def row_usage(usage: Mapping[str, Any] | None, cost_usd: float, source: str) -> dict[str, Any]:
    """The ``usage`` block of a batch record: the row's tokens and its share of the bill."""
    usage = usage or {}
    prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": _int(usage.get("total_tokens")) or prompt + completion,
        "cached_tokens": _int(prompt_details.get("cached_tokens"))
        if isinstance(prompt_details, Mapping) else 0,
        "reasoning_tokens": _int(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, Mapping) else 0,
        "cost_usd": cost_usd,
        "cost_source": source,
    }
