"""A finished batch → the records to write and the lines to send again. Pure: no I/O, no clock.

Every row of the submission ends one way: a success record, an error record (a per-line verdict,
or a transient failure out of attempts), or a later batch (never ran; transient with attempts
left). The batch's bill is shared over its billed rows by tokens at the batch price, so the
records' ``billed_usd`` add up to it (OpenRouter's ``usage.cost``; on OpenAI, which reports no
cost, the rows' tokens at the batch price). Rows already written by an earlier run are skipped:
the results file is the checkpoint, also in the middle of a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchrun.batch.collect import (
    FailedBatch,
    RowOutcome,
    allocate_cost,
    classify_row,
    failed_batch,
    row_usage,
    token_weight,
    wire_index,
)
from batchrun.batch.info import BatchInfo
from batchrun.batch.journal import Submission
from batchrun.errors import RETRYABLE_KINDS, ErrorKind
from batchrun.pricing import Price
from batchrun.records import Request, error_record, success_record
from batchrun.retry import Verdict
from batchrun.schema import validate_reply

__all__ = ["Settled", "batch_cost", "settle_batch"]


@dataclass
class Settled:
    """What one finished batch comes to."""

    results: list[tuple[dict[str, Any], bytes]] = field(default_factory=list)  # (record, raw body)
    errors: list[dict[str, Any]] = field(default_factory=list)
    retry: dict[str, tuple[int, float]] = field(default_factory=dict)  # id -> (attempts, billed)
    not_sent: int = 0  # lines left unsent: their model has no batch endpoint
    cost_usd: float = 0.0
    failure: FailedBatch | None = None  # why a failed batch failed
    disowned: bool = False  # not one row carries the submission's nonce: not this job's batch


def batch_cost(info: BatchInfo, outcomes: Mapping[int, RowOutcome], price: Price | None) -> tuple[float, str]:
    """What the batch was billed, and where that figure is from (a record's ``cost_source``)."""
    if info.cost_usd is not None:
        return info.cost_usd, "provider"
    if price is None:
        return 0.0, "unknown"
    total = 0.0
    for outcome in outcomes.values():
        usage = outcome.usage or {}
        if outcome.ran and usage:
            total += price.cost(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
    return total, "price_table"


def settle_batch(
    sub: Submission,
    info: BatchInfo,
    rows: list[dict[str, Any]],
    *,
    price: Price | None,
    max_attempts: int,
    schema: Mapping[str, Any] | None,
    written: Container[str],
    now: float,
    redact: Callable[[str], str] = lambda text: text,
) -> Settled:
    """Judge every row of a finished batch; ``written``: ids that already have their record."""
    settled = Settled()
    outcomes: dict[int, RowOutcome] = {}
    for row in rows:
        index = wire_index(row.get("custom_id"), sub.nonce)
        if index is not None and index < len(sub.items):
            outcomes.setdefault(index, classify_row(row, now=now))
    if rows and not outcomes:
        settled.disowned = True
        return settled
    cost, source = batch_cost(info, outcomes, price)
    settled.cost_usd = cost
    billed = [i for i, outcome in outcomes.items() if outcome.ran and outcome.usage]
    weights = [token_weight(outcomes[i].usage, price) for i in billed]
    shares = dict(zip(billed, allocate_cost(cost, weights), strict=True))
    failure = failed_batch(info.error_message, info.errors, sub.nonce) if info.status == "failed" else None
    settled.failure = failure
    batch_id = str(sub.batch_id)
    latency = max(now - sub.t0, 0.0)
    for index, (custom_id, line, attempts, metadata, *rest) in enumerate(sub.items):
        custom_id, line, attempts = str(custom_id), int(line), int(attempts)
        carried = float(rest[0]) if rest else 0.0
        if custom_id in written:
            continue
        outcome = outcomes.get(index)
        if outcome is None or not outcome.ran:
            _not_run(settled, failure, index, custom_id, line, attempts, metadata, carried, batch_id,
                     max_attempts)
            continue
        request = Request(custom_id, line, b"", sub.model, 0, None, metadata, schema is not None)
        request.attempts = attempts + 1
        share = shares.get(index, 0.0)
        request.billed_usd = carried + share
        _settle_row(settled, request, outcome, row_usage(outcome.usage, share, source) if outcome.usage
                    else None, batch_id, latency, max_attempts, schema, redact)
    return settled


def _not_run(
    settled: Settled, failure: FailedBatch | None, index: int, custom_id: str, line: int,
    attempts: int, metadata: Any, carried: float, batch_id: str, max_attempts: int,
) -> None:
    """A row that never ran: again in a later batch, without using an attempt (except as below).

    A failed batch ran nothing: the line its error names is refused for good, and the others go
    again; when it names none, every line uses an attempt, so a batch that always fails ends in
    error records; a model without batch support leaves its lines unsent.
    """
    if failure is not None and failure.scope == "model":
        settled.not_sent += 1
        return
    if failure is not None and (failure.scope == "batch" or failure.index == index):
        attempts += 1
        named = failure.index == index
        if named or attempts >= max_attempts:
            record = error_record(
                custom_id, line, ErrorKind.INVALID_REQUEST if named else ErrorKind.PROVIDER_ERROR,
                ("the Batch API failed the batch for this line: " if named else
                 "the Batch API failed the batch: ") + failure.message,
                metadata=metadata,
            )
            record["attempts"] = attempts
            record["batch_id"] = batch_id
            settled.errors.append(record)
            return
    settled.retry[custom_id] = (attempts, carried)


def _settle_row(
    settled: Settled, request: Request, outcome: RowOutcome, usage: dict[str, Any] | None,
    batch_id: str, latency: float, max_attempts: int, schema: Mapping[str, Any] | None,
    redact: Callable[[str], str],
) -> None:
    verdict = outcome.verdict
    body = verdict.body if isinstance(verdict.body, dict) else None
    parsed = None
    if verdict.kind is None and schema is not None and body is not None:
        parsed, problem = validate_reply(body, schema)
        if problem is not None:
            verdict = Verdict(ErrorKind.INVALID_OUTPUT, problem, body)
    if verdict.kind is None and body is not None and outcome.raw_body is not None:
        record = success_record(request, outcome.raw_body, body, usage or row_usage(None, 0.0, "unknown"),
                                latency, parsed=parsed)
        record["batch_id"] = batch_id
        settled.results.append((record, outcome.raw_body))
        return
    kind = verdict.kind or ErrorKind.PROVIDER_ERROR
    if kind in RETRYABLE_KINDS and request.attempts < max_attempts:
        settled.retry[request.custom_id] = (request.attempts, request.billed_usd)
        return
    record = error_record(
        request.custom_id, request.line, kind, redact(verdict.message), status=outcome.status,
        body=body, usage=usage, request=request, latency_s=latency,
    )
    record["batch_id"] = batch_id
    settled.errors.append(record)
