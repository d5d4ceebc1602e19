"""Result rows of either provider's shape → outcomes, and a batch's cost over its rows (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from batchrun.batch.collect import (
    allocate_cost,
    classify_row,
    failed_batch_index,
    token_weight,
    wire_index,
)
from batchrun.errors import ErrorKind
from batchrun.pricing import Price

_OK_BODY = {"id": "gen-1", "model": "m", "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


def _response(status: int, body: Any) -> dict[str, Any]:
    return {"custom_id": "n-0", "response": {"status_code": status, "request_id": "r", "body": body},
            "error": None}


def _error(**error: Any) -> dict[str, Any]:
    return {"custom_id": "n-0", "response": None, "error": error}


@pytest.mark.parametrize(("row", "ran", "kind"), [
    (_response(200, _OK_BODY), True, None),
    # an error inside a 200, as sync mode judges it
    (_response(200, {"error": {"code": 502, "message": "Provider returned error"}}), True,
     ErrorKind.PROVIDER_ERROR),
    (_response(200, {**_OK_BODY, "choices": [{"finish_reason": "content_filter", "message": {}}]}), True,
     ErrorKind.CONTENT_FILTERED),
    # OpenAI's error-file shape: response.status_code with an error body
    (_response(400, {"error": {"message": "bad", "type": "invalid_request_error"}}), True,
     ErrorKind.INVALID_REQUEST),
    (_response(429, {"error": {"message": "slow down"}}), True, ErrorKind.RATE_LIMITED),
    (_response(500, {"error": {"message": "boom"}}), True, ErrorKind.SERVER_ERROR),
    # OpenRouter's row error object
    (_error(type="rate_limit_error", message="m", error_type="rate_limit_exceeded"), True,
     ErrorKind.RATE_LIMITED),
    (_error(type="server_error", message="m", error_type="server"), True, ErrorKind.SERVER_ERROR),
    (_error(type="timeout_error", message="m", error_type="timeout"), True, ErrorKind.TIMEOUT),
    (_error(type="invalid_request_error", message="m", error_type="context_length_exceeded"), True,
     ErrorKind.INVALID_REQUEST),
    (_error(type="invalid_request_error", message="Unable to download the file."), True,
     ErrorKind.INVALID_REQUEST),
    (_error(type="x", message="m", error_type="content_policy_violation"), True, ErrorKind.CONTENT_FILTERED),
    (_error(type="weird", message="m"), True, ErrorKind.PROVIDER_ERROR),
    # never ran: again later, without using an attempt
    (_error(code="batch_expired", message="This request was not executed because the batch expired."),
     False, ErrorKind.PROVIDER_ERROR),
    (_error(code="batch_cancelled", message="not executed"), False, ErrorKind.PROVIDER_ERROR),
    ({"custom_id": "n-0", "response": None, "error": None}, True, ErrorKind.PROVIDER_ERROR),
])
def test_classify_row(row: dict[str, Any], ran: bool, kind: str | None) -> None:
    outcome = classify_row(row)
    assert outcome.ran is ran
    assert outcome.verdict.kind == kind
    if kind is None:
        assert outcome.raw_body is not None and outcome.usage == _OK_BODY["usage"]


@pytest.mark.parametrize(("custom_id", "index"), [
    ("abc123-0", 0), ("abc123-4999", 4999), ("abc124-1", None), ("abc123-", None), ("abc123-x", None),
    (7, None), ("abc123", None),
])
def test_wire_index(custom_id: Any, index: int | None) -> None:
    assert wire_index(custom_id, "abc123") == index


@pytest.mark.parametrize(("message", "index"), [
    ("Batch request 'abc123-7' sets stream: true. Batch requests do not support stream: true.", 7),
    ("Batch request 'ffff00-7' sets stream: true.", None),
    ("Batch failed.", None),
])
def test_failed_batch_index(message: str, index: int | None) -> None:
    assert failed_batch_index(message, "abc123") == index


@pytest.mark.parametrize(("total", "weights"), [
    (0.000123, [1.0, 2.0, 3.0]),
    (1e-9, [0.3] * 7),
    (0.5, [0.0, 0.0]),  # nothing to weigh by: equal shares
    (0.0, [5.0, 1.0]),
    (3.3, [1e-12, 1.0, 1e6]),
])
def test_allocate_cost_adds_up(total: float, weights: list[float]) -> None:
    shares = allocate_cost(total, weights)
    assert len(shares) == len(weights)
    assert sum(shares) == pytest.approx(total, rel=1e-12, abs=1e-18)
    assert all(share >= -1e-18 for share in shares)


def test_allocate_by_priced_tokens() -> None:
    price = Price.per_million(1.0, 4.0)
    a = token_weight({"prompt_tokens": 100, "completion_tokens": 0}, price)
    b = token_weight({"prompt_tokens": 0, "completion_tokens": 100}, price)
    assert allocate_cost(5.0, [a, b]) == pytest.approx([1.0, 4.0])
    assert token_weight(None, price) == 0.0
    assert token_weight({"prompt_tokens": 3, "completion_tokens": 4}, None) == 7.0
