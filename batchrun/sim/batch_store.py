"""Batch jobs of both simulated Batch APIs: their state, the status lifecycle, rows run and billing.

The store is dialect-neutral: batch_openrouter.py and batch_openai.py parse requests, supply the
second-stage validator and render the objects. Time only moves lazily: every request to a batch
route (and GET /_sim/ledger) calls `advance()`, which replays what happened since, at the instants
the config fixes, so the outcome never depends on when a client happened to look.
"""

from __future__ import annotations

import hashlib
import math
import random
import string
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from .catalog import Model, batch_variant
from .config import BATCH_FAULT_KINDS, BATCH_ROW_FAULT_KINDS, SimConfig
from .faults import MARKER
from .ledger import Entry, Ledger
from .replies import Reply, cost_parts, make_reply, message_text, prompt_key, prompt_tokens

__all__ = [
    "TERMINAL",
    "Batch",
    "BatchStore",
    "Rejection",
    "Row",
    "RowResult",
    "Validator",
    "estimate_usd",
    "random_alnum",
    "row_marker",
    "unix_s",
    "with_provider",
]

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_DAY_S = 86_400.0
_ALNUM = string.ascii_letters + string.digits
# Ids only need to be unique, not reproducible (as bodies.new_gen_id).
_ID_RNG = random.Random()

# Prompt markers that force one row's outcome in a batch: `[[sim:row500]]` (or the sync kinds
# 429, 500, 502, 503, 504, 524, hang), `[[sim:row400]]`, `[[sim:timeout]]`, and `[[sim:expire]]`:
# the batch expires with this row and every later one not run. `*N` limits it to N attempts.
_ROW_MARKERS = {
    "429": "429",
    "row429": "429",
    "500": "500",
    "502": "500",
    "503": "500",
    "row500": "500",
    "504": "timeout",
    "524": "timeout",
    "hang": "timeout",
    "timeout": "timeout",
    "rowtimeout": "timeout",
    "400": "400",
    "row400": "400",
    "expire": "expire",
    "expired": "expire",
}


def random_alnum(n: int) -> str:
    """Return `n` random letters and digits (for ids)."""
    return "".join(_ID_RNG.choices(_ALNUM, k=n))


@dataclass(frozen=True, slots=True)
class Row:
    """One request of a batch, as submitted."""

    index: int  # 0-based, input order
    line: int  # 1-based line number as the provider reports it
    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RowResult:
    """What happened to one row: `ok`, a row fault (BATCH_ROW_FAULT_KINDS), or not run."""

    row: Row
    kind: str  # "ok", "429", "500", "timeout", "400", "expired", "cancelled"
    gen_id: str
    reply: Reply | None
    cost: float
    t: float

    @property
    def ok(self) -> bool:
        """True when the row succeeded (and is billed)."""
        return self.kind == "ok"

    @property
    def ran(self) -> bool:
        """True when the row reached the model, successfully or not."""
        return self.kind not in ("expired", "cancelled")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why the second stage failed a whole batch (OpenAI also wants a code, line and param)."""

    message: str
    code: str = "invalid_request"
    line: int | None = None
    param: str | None = None


Validator = Callable[["Batch"], "Rejection | None"]


@dataclass(eq=False)
class Batch:
    """One batch job and everything the server knows about it."""

    id: str
    seq: int
    dialect: str
    endpoint: str
    model_id: str  # as submitted
    model: Model | None  # the served model at its sync price (None: OpenAI, before validation)
    rows: list[Row]
    created: float  # wall clock, seconds
    visible_at: float
    validated_at: float
    done_at: float
    expires_at: float
    validator: Validator
    status: str = "validating"
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    finalized_at: float | None = None
    cancelling_at: float | None = None
    error: Rejection | None = None
    results: list[RowResult] = field(default_factory=list)
    expire_from: int | None = None
    paid: bool = False
    deleted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # dialect-specific fields (files, metadata)

    @property
    def terminal(self) -> bool:
        """True once the batch reached completed, failed, expired or cancelled."""
        return self.status in TERMINAL

    @property
    def cost(self) -> float:
        """The batch price of the rows that succeeded."""
        return sum(r.cost for r in self.results if r.ok)

    def counts(self) -> dict[str, int]:
        """Return `request_counts`: rows that succeeded and failed so far."""
        done = sum(1 for r in self.results if r.ok)
        return {"total": len(self.rows), "completed": done, "failed": len(self.results) - done}

    def usage_tokens(self) -> tuple[int, int, int, int]:
        """Return (prompt, completion, cached, reasoning) tokens over the rows that succeeded."""
        replies = [r.reply for r in self.results if r.ok and r.reply is not None]
        return (
            sum(r.prompt_tokens for r in replies),
            sum(r.completion_tokens for r in replies),
            sum(r.cached_tokens for r in replies),
            sum(r.reasoning_tokens for r in replies),
        )

    def ordered_results(self) -> list[RowResult]:
        """Return the rows that ran: successes in input order, then failures (batch-wire A6.2)."""
        ran = [r for r in self.results if r.ran]
        return [r for r in ran if r.ok] + [r for r in ran if not r.ok]


def row_marker(body: Mapping[str, Any]) -> tuple[str, int | None] | None:
    """Return (row kind, times or None) for the first batch marker in a body's messages."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    for m in messages:
        text = message_text(m) if isinstance(m, dict) else ""
        if "[[sim:" not in text:
            continue
        for match in MARKER.finditer(text):
            kind = _ROW_MARKERS.get(match.group(1).lower())
            if kind is not None:
                times = match.group(2)
                return kind, int(times) if times is not None else None
    return None


class BatchStore:
    """Every batch of one simulator, behind one lock (handlers run on the loop thread, tests read
    from others)."""

    def __init__(self, config: SimConfig, ledger: Ledger) -> None:
        self.config = config
        self.ledger = ledger
        self._lock = threading.RLock()
        self.reset()

    @property
    def lock(self) -> threading.RLock:
        """The lock every change to batches and files holds (re-entrant)."""
        return self._lock

    def reset(self) -> None:
        """Forget every batch, file and marker count; restore the configured balance."""
        with self._lock:
            self.batches: dict[str, Batch] = {}
            self.files: dict[str, dict[str, Any]] = {}
            self.file_content: dict[str, bytes] = {}
            self.list_cache: dict[str, tuple[float, bytes]] = {}
            self.credits_usd: float | None = self.config.credits_usd
            self.lost_replies_left = self.config.batch_lost_replies
            self._seq = 0
            self._attempts: dict[str, int] = {}
            self._route_rng = random.Random(f"{self.config.seed}:batch-routes")

    # -- creation -------------------------------------------------------------------------------

    def new_batch(
        self,
        *,
        batch_id: str,
        dialect: str,
        endpoint: str,
        model_id: str,
        model: Model | None,
        rows: list[Row],
        validator: Validator,
        now: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Batch:
        """Record a batch accepted by the synchronous checks, at status `validating`."""
        cfg = self.config
        t = time.time() if now is None else now
        with self._lock:
            self._seq += 1
            lag = cfg.batch_visibility_s
            if self._seq == 1 and cfg.batch_first_visibility_s is not None:
                lag = cfg.batch_first_visibility_s
            if dialect != "openrouter":
                lag = 0.0  # OpenAI documents no read-after-write lag
            validated = t + cfg.batch_validating_s
            window = cfg.batch_expiry_s
            if window is None:
                provider = model.provider if model is not None else ""
                window = 4 * _DAY_S if provider == "Google" else _DAY_S
            batch = Batch(
                id=batch_id,
                seq=self._seq,
                dialect=dialect,
                endpoint=endpoint,
                model_id=model_id,
                model=model,
                rows=rows,
                created=t,
                visible_at=t + lag,
                validated_at=validated,
                done_at=max(validated, t + cfg.batch_processing_s),
                expires_at=t + window,
                validator=validator,
                extra=extra or {},
            )
            self.batches[batch_id] = batch
            return batch

    def take_lost_reply(self) -> bool:
        """True when this create's reply is to be dropped (the `batch_lost_replies` knob)."""
        with self._lock:
            if self.lost_replies_left > 0:
                self.lost_replies_left -= 1
                return True
            return False

    def route_fault(self, header: str | None) -> str | None:
        """Return the fault for one request to a batch route: forced by X-Sim-Fault, or drawn."""
        forced = (header or "").strip().lower()
        if forced in BATCH_FAULT_KINDS:
            return forced
        rates = self.config.batch_faults
        if not rates:
            return None
        with self._lock:
            u = self._route_rng.random()
        acc = 0.0
        for kind, rate in rates.items():
            acc += rate
            if u < acc:
                return kind
        return None

    # -- reads ----------------------------------------------------------------------------------

    def find(self, batch_id: str, now: float, *, dialect: str) -> Batch | None:
        """Return a batch a GET can see (past its visibility lag, not deleted), or None."""
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None or batch.deleted or batch.dialect != dialect:
                return None
            if now < batch.visible_at:
                return None
            return batch

    def listed(self, now: float, *, dialect: str) -> list[Batch]:
        """Return the batches a list can see, newest first."""
        with self._lock:
            seen = [
                b
                for b in self.batches.values()
                if not b.deleted and b.dialect == dialect and now >= b.visible_at
            ]
        return sorted(seen, key=lambda b: (b.created, b.seq), reverse=True)

    def remaining_usd(self) -> float | None:
        """Return credits left after everything billed, or None when unlimited."""
        with self._lock:
            if self.credits_usd is None:
                return None
            return self.credits_usd - self.ledger.billed_total_usd()

    def set_credits(self, usd: float | None) -> None:
        """Set the account's credits (POST /_sim/balance), then settle batches now affordable."""
        with self._lock:
            self.credits_usd = usd
        self.advance()

    # -- the lifecycle --------------------------------------------------------------------------

    def advance(self, now: float | None = None) -> None:
        """Bring every batch up to `now`: validation, rows run, terminal status, billing."""
        t = time.time() if now is None else now
        with self._lock:
            for batch in sorted(self.batches.values(), key=lambda b: b.seq):
                self._advance(batch, t)

    def _advance(self, b: Batch, now: float) -> None:
        if b.status == "validating":
            if now < b.validated_at:
                return
            problem = b.validator(b)
            if problem is not None:
                b.status, b.error, b.finalized_at = "failed", problem, b.validated_at
                return
            b.status, b.in_progress_at = "in_progress", b.validated_at
        if b.status in ("in_progress", "finalizing", "cancelling"):
            self._run_rows(b, now)
        if b.terminal and not b.paid:
            self._settle(b)

    def _row_time(self, b: Batch, index: int) -> float:
        # Rows finish evenly over the running phase; OpenAI then spends a tenth of it finalizing.
        end = b.done_at
        if b.dialect == "openai":
            end = b.validated_at + 0.9 * (b.done_at - b.validated_at)
        return b.validated_at + (index + 1) / len(b.rows) * (end - b.validated_at)

    def _run_rows(self, b: Batch, now: float) -> None:
        stop_at = min(b.done_at, b.expires_at)
        if b.cancelling_at is not None:
            stop_at = min(stop_at, b.cancelling_at)
        while len(b.results) < len(b.rows):
            row = b.rows[len(b.results)]
            t = self._row_time(b, row.index)
            if t > min(now, stop_at) or (b.expire_from is not None and row.index >= b.expire_from):
                break
            result = self._run_row(b, row, t)
            if result is None:  # an expire marker: this row and the rest never run
                b.expire_from = row.index
                break
            b.results.append(result)
        if b.cancelling_at is not None:
            end = b.cancelling_at + self.config.batch_cancel_s
            if now >= end:
                self._finish(b, "cancelled", end)
        elif b.expires_at < b.done_at and now >= b.expires_at:
            self._finish(b, "expired", b.expires_at)
        elif now >= b.done_at:
            self._finish(b, "expired" if b.expire_from is not None else "completed", b.done_at)
        elif b.dialect == "openai" and len(b.results) == len(b.rows):
            b.status = "finalizing"
            b.finalizing_at = b.finalizing_at or self._row_time(b, len(b.rows) - 1)

    def _finish(self, b: Batch, status: str, at: float) -> None:
        ran = len(b.results)
        kind = "cancelled" if status == "cancelled" else "expired"
        for row in b.rows[ran:]:
            b.results.append(RowResult(row, kind, "", None, 0.0, at))
        if status == "completed" and b.dialect == "openai":
            b.finalizing_at = b.finalizing_at or self._row_time(b, len(b.rows) - 1)
        b.status, b.finalized_at = status, at

    def _settle(self, b: Batch) -> None:
        # The charge lands at finalize; if the balance cannot cover it, reads answer 402 and the
        # results wait until a top-up (batch-wire A4.3, A10). Rows are billed here, once.
        cost = b.cost
        left = self.remaining_usd()
        gated = b.dialect == "openrouter"  # OpenAI has no 402 on read
        if gated and left is not None and cost > 0 and cost > left + 1e-12:
            return
        assert b.model is not None or not any(r.ok for r in b.results)
        for r in b.results:
            if not r.ok or r.reply is None or b.model is None:
                continue
            reply = r.reply
            self.ledger.add(
                Entry(
                    gen_id=r.gen_id,
                    model=b.model.id,
                    provider=b.model.provider,
                    prompt_tokens=reply.prompt_tokens,
                    completion_tokens=reply.completion_tokens,
                    reasoning_tokens=reply.reasoning_tokens,
                    cached_tokens=reply.cached_tokens,
                    cost=r.cost,
                    billed=True,
                    outcome="batch",
                    prompt_key=prompt_key(r.row.body.get("messages") or []),
                    t=time.monotonic(),
                    finish_reason=reply.finish_reason,
                    batch_id=b.id,
                    custom_id=r.row.custom_id,
                )
            )
        b.paid = True

    def _attempt(self, key: str) -> int:
        n = self._attempts.get(key, 0) + 1
        self._attempts[key] = n
        return n

    def _run_row(self, b: Batch, row: Row, t: float) -> RowResult | None:
        assert b.model is not None
        body = row.body
        kind = "ok"
        marker = row_marker(body)
        if marker is not None:
            forced, times = marker
            key = hashlib.sha256(
                b.model.id.encode() + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
            ).hexdigest()
            if times is None or self._attempt(key) <= times:
                if forced == "expire":
                    return None
                kind = forced
        else:
            kind = self._drawn_fault(b) or "ok"
        if kind == "ok" and not _runnable(body):
            kind = "400"  # OpenAI runs what it cannot answer and reports a 400 in its row
        gen_id = f"gen-batch-{int(t)}-{random_alnum(20)}"
        if kind != "ok":
            return RowResult(row, kind, gen_id, None, 0.0, t)
        messages = body.get("messages") or []
        n_prompt = prompt_tokens(messages, body.get("tools"))
        priced = batch_variant(b.model)
        reply = make_reply(body, messages, priced, n_prompt)
        pc, cc = cost_parts(priced, reply.prompt_tokens, reply.completion_tokens)
        return RowResult(row, "ok", gen_id, reply, pc + cc, t)

    def _drawn_fault(self, b: Batch) -> str | None:
        rates = self.config.batch_row_faults
        if not rates:
            return None
        rng = b.extra.get("_rng")
        if rng is None:
            # One RNG per batch, seeded by its sequence number: the same knobs give the same rows.
            rng = b.extra["_rng"] = random.Random(f"{self.config.seed}:batch:{b.seq}")
        u = rng.random()
        acc = 0.0
        for kind in BATCH_ROW_FAULT_KINDS:
            acc += rates.get(kind, 0.0)
            if u < acc:
                return kind
        return None

    # -- deletion and cancel --------------------------------------------------------------------

    def delete(self, b: Batch) -> None:
        """Tombstone a terminal batch: GET and list no longer see it; billing stays."""
        with self._lock:
            b.deleted = True
            self.list_cache.clear()

    def cancel(self, b: Batch, now: float) -> None:
        """Start cancelling (OpenAI): rows not run by now are never run."""
        with self._lock:
            if b.status == "validating":
                b.validated_at = now  # validate at once, then cancel what it accepted
                self._advance(b, now)
            if b.terminal or b.status == "cancelling":
                return
            b.cancelling_at = now
            b.status = "cancelling"

    # -- the test helper ------------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        """Return every batch's state for GET /_sim/batches (deleted ones included)."""
        with self._lock:
            out = []
            for b in sorted(self.batches.values(), key=lambda x: x.seq):
                ran = [r for r in b.results if r.ran]
                out.append(
                    {
                        "id": b.id,
                        "dialect": b.dialect,
                        "model": b.model_id,
                        "status": b.status,
                        "created_at": b.created,
                        "visible_at": b.visible_at,
                        "done_at": b.done_at,
                        "expires_at": b.expires_at,
                        "request_counts": b.counts(),
                        "rows_run": len(ran),
                        "custom_ids": [r.custom_id for r in b.rows],
                        "cost": b.cost,
                        "paid": b.paid,
                        "deleted": b.deleted,
                        "error": None if b.error is None else b.error.message,
                    }
                )
            return out


_ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})


def _runnable(body: Mapping[str, Any]) -> bool:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return False
    if not all(isinstance(m, dict) and m.get("role") in _ROLES for m in messages):
        return False
    for key in ("max_tokens", "max_completion_tokens"):
        cap = body.get(key)
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            return False
    return True


def estimate_usd(model: Model, rows: list[Row]) -> float:
    """Worst-case batch cost of rows: their prompt plus their max_tokens (or the model's cap)."""
    priced = batch_variant(model)
    total = 0.0
    for row in rows:
        body = row.body
        messages = body.get("messages")
        n_prompt = prompt_tokens(messages, body.get("tools")) if isinstance(messages, list) else 0
        cap = body.get("max_completion_tokens", body.get("max_tokens"))
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            cap = model.max_completion_tokens or 4096
        pc, cc = cost_parts(priced, n_prompt, cap)
        total += pc + cc
    return total


def with_provider(model: Model, provider: str) -> Model:
    """Return the model as served by one of its providers."""
    return replace(model, provider=provider)


def unix_s(t: float) -> int:
    """Whole seconds, rounded down, as the APIs print timestamps."""
    return math.floor(t)
