"""A sync run: one reader → a bounded pool of workers → one writer, in one task group.

The reader streams the input and skips ids the output already has; workers take requests
(retries first), wait for their turn at the limits, reserve the budget, send, classify, and either
finish the id or schedule its retry; the writer appends finished records. Every task — reader,
workers, writer, each retry's wait — belongs to one ``TaskGroup``: when ``run`` returns nothing of
the run is left on the loop, so its summary is final. A stop (a signal, a refused key, the budget,
no network) cancels the retries that wait and counts their lines as not run at once.

Only this module decides to stop a job; the budget, the writer and the limits answer questions.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from batchrun.engine.budget import Budget, to_nano, worst_case_bound
from batchrun.engine.preflight import Preflight, parser_for, stop_hint
from batchrun.engine.tasks import TaskGroup
from batchrun.engine.writer import Writer
from batchrun.errors import RETRYABLE_KINDS, ErrorKind, TransportFailure
from batchrun.events import EventHandler, Finished, Notice, Retrying
from batchrun.inputs import iter_lines, open_input
from batchrun.limits import AdaptiveLimits
from batchrun.pricing import response_cost, usage_of
from batchrun.records import InvalidLine, Request, error_record, success_record
from batchrun.retry import Verdict, classify_response, retry_wait
from batchrun.schema import validate_reply
from batchrun.summary import Summary
from batchrun.units import usd
from batchrun.workqueue import WorkQueue

__all__ = ["Pipeline", "unreachable_threshold"]

_STOP_KINDS = frozenset({ErrorKind.AUTH_ERROR, ErrorKind.INSUFFICIENT_CREDITS})


def unreachable_threshold(concurrency: int) -> int:
    """Attempts in a row with no answer at all (DNS, refused, unreachable) that stop the job.

    Enough that one dropped connection is retried like any other, few enough that a machine
    without network stops before any line runs out of attempts.
    """
    return max(3, min(concurrency, 8))


class Pipeline:
    """Runs the requests of one job once its preflight is done; ``stop`` may be called any time."""

    def __init__(
        self,
        pre: Preflight,
        *,
        summary: Summary,
        limits: AdaptiveLimits,
        budget: Budget,
        writer: Writer,
        emit: EventHandler,
    ) -> None:
        self.pre = pre
        self.config = pre.config
        self.summary = summary
        self._limits = limits
        self._budget = budget
        self._writer = writer
        self._emit = emit
        self._transport = pre.transport
        self._trace = pre.trace
        self._redact = pre.redactor.text
        self._queue: WorkQueue[Request] = WorkQueue(readahead=2 * self.config.concurrency + 16)
        self._group: TaskGroup | None = None
        self._waiting_retries: set[asyncio.Task[Any]] = set()
        self._outstanding = 0
        self._reader_done = False
        self.stop_kind: str | None = None
        self.stop_message = ""
        self.unavailable: dict[str, tuple[str, ...]] = {}  # model -> fallback models
        self.skipped_unavailable = 0
        self._no_answer_streak = 0
        self._no_answer_limit = unreachable_threshold(self.config.concurrency)
        self._prior_billed = pre.state.billed
        writer.on_failure = lambda exc: self.stop(exc.kind, str(exc))

    # -- control -------------------------------------------------------------------------

    def stop(self, kind: str = ErrorKind.INTERRUPTED, message: str = "interrupted") -> None:
        """Stop sending; requests in flight finish and are written. Safe to call twice."""
        if self.stop_kind is not None:
            return
        self.stop_kind, self.stop_message = kind, message
        dropped = self._queue.close(drop=True)
        self.summary.not_run += len(dropped)
        self._outstanding -= len(dropped)
        for task in list(self._waiting_retries):
            task.cancel()  # its line is counted as not run when the cancel lands
        self._emit(Notice(f"stopping: {message}", important=True))

    async def run(self) -> None:
        writer = self._writer
        try:
            async with TaskGroup() as group:
                self._group = group
                group.start(self._serve_writer())
                try:
                    async with TaskGroup() as work:
                        work.start(self._reader())
                        for _ in range(self.config.concurrency):
                            work.start(self._worker())
                finally:
                    writer.close()
        finally:
            self._group = None
            writer.flush()

    async def _serve_writer(self) -> None:
        trace = self._trace
        await self._writer.serve(before_sync=trace.flush if trace is not None else None)

    # -- reader --------------------------------------------------------------------------

    async def _reader(self) -> None:
        config = self.config
        parser = parser_for(config, skip_ids=self.pre.skip_ids())
        prior = self._prior_billed
        read = 0
        with open_input(config.input) as stream:
            for line, raw in iter_lines(stream):
                if self.stop_kind is not None or (config.limit is not None and read >= config.limit):
                    break
                read += 1
                if not read & 1023:
                    await asyncio.sleep(0)  # let the workers and the writer run during long skips
                item = parser.parse(raw, line)
                if item is None:
                    continue
                if isinstance(item, InvalidLine):
                    self._finish_invalid(item)
                elif item.model in self.unavailable:
                    self.skipped_unavailable += 1
                else:
                    if prior:
                        item.billed_usd = prior.get(item.custom_id, 0.0)
                    await self._accept(item)
        self._reader_done = True
        self._close_if_done()

    async def _accept(self, item: Request) -> None:
        """Hand one request read from the input to the workers (waits while the read-ahead is full)."""
        self._outstanding += 1
        await self._queue.put(item)

    def _finish_invalid(self, item: InvalidLine) -> None:
        record = error_record(
            item.custom_id, item.line, ErrorKind.INVALID_INPUT, item.message, metadata=item.metadata
        )
        self._writer.error(record)
        self._emit(Finished(item.custom_id, ErrorKind.INVALID_INPUT))

    def _close_if_done(self) -> None:
        if self._reader_done and self._outstanding == 0:
            self._queue.close()

    # -- workers -------------------------------------------------------------------------

    async def _worker(self) -> None:
        queue = self._queue
        while (item := await queue.get()) is not None:
            await self._attempt(item)

    async def _attempt(self, item: Request) -> None:
        limits = self._limits
        status: int | None = None
        raw = b""
        ttft_s: float | None = None
        await limits.gate.acquire()
        try:
            wait = limits.reserve(item.est_tokens)
            if wait > 0:
                await asyncio.sleep(wait)
            if self.stop_kind is not None or item.model in self.unavailable:
                limits.settle(item.est_tokens, 0)
                self._leave_unfinished(item)
                return
            if not self._reserve_budget(item):
                return
            # Records finished before this send are written first, so that what a kill can lose
            # (sent but unwritten) never exceeds the requests in flight: at most --concurrency.
            if self._writer.pending:
                self._writer.flush()
            item.attempts += 1
            started = time.perf_counter()
            try:
                status, headers, raw, ttft_s = await self._transport.post(item.body)
                verdict = classify_response(
                    status, headers, raw, schema_required=item.schema_required, now=time.time()
                )
            except TransportFailure as failure:
                verdict = Verdict(failure.kind, failure.message)
                if failure.stops_job:
                    self.stop(failure.kind, failure.message)
                elif failure.no_answer:
                    self._count_no_answer(failure)
            else:
                self._no_answer_streak = 0
            latency = time.perf_counter() - started
        finally:
            limits.gate.release()
        self._settle(item, status, raw, verdict, latency, ttft_s)

    def _count_no_answer(self, failure: TransportFailure) -> None:
        """Stop the job when every recent attempt failed to reach the server at all."""
        self._no_answer_streak += 1
        if self._no_answer_streak >= self._no_answer_limit:
            host = self._transport.host
            self.stop(
                ErrorKind.CONNECTION_ERROR,
                f"cannot reach {host}: {failure.message} ({self._no_answer_streak} attempts in a row "
                "got no answer); check the network, the proxy or --base-url, then run again to resume",
            )

    def _worst_case(self, item: Request) -> int | None:
        """The request's worst case in nano-dollars; None (the job stopped) when a price is unknown."""
        # Any model of the line's fallback list may serve it, so the dearest one is booked.
        models = (item.model, *item.models)
        prices = [self.pre.prices.get(model) for model in models]
        if None in prices:
            unknown = models[prices.index(None)]
            self.stop(ErrorKind.BUDGET_EXCEEDED, f"no price known for {unknown}, so --max-cost cannot be kept")
            self._leave_unfinished(item)
            return None
        return worst_case_bound(len(item.body), item.max_tokens or 0, [p for p in prices if p])

    def _reserve_budget(self, item: Request) -> bool:
        budget = self._budget
        if not budget.capped:
            return True
        worst = self._worst_case(item)
        if worst is None:
            return False
        if not budget.try_reserve(worst):
            self.stop(
                ErrorKind.BUDGET_EXCEEDED,
                f"budget reached: {usd(budget.spent_usd())} of the job's ${self.config.max_cost_usd:g} "
                f"spent (runs before included), and the next request could cost up to "
                f"{usd(worst / 1e9)}; raise --max-cost (max_cost_usd) and run again to resume",
            )
            self._leave_unfinished(item)
            return False
        item.reserved_nano = worst
        return True

    def _settle(
        self, item: Request, status: int | None, raw: bytes, verdict: Verdict, latency: float,
        ttft_s: float | None = None,
    ) -> None:
        body = verdict.body
        raw_usage = usage_of(body)
        usage = None
        budget = self._budget
        if raw_usage is not None:
            model = body.get("model") if isinstance(body.get("model"), str) else item.model
            usage = response_cost(raw_usage, model, self.pre.prices)
            cost = usage["cost_usd"] or 0.0
            item.billed_usd += cost
            budget.settle(item.reserved_nano, to_nano(cost) if cost else 0)
            self._limits.settle(item.est_tokens, usage["total_tokens"])
        elif status is None:
            # No answer (timeout, reset): it may have been billed in full, so the budget counts
            # the whole reservation as spent and the rate limiter keeps its tokens.
            budget.settle(item.reserved_nano, item.reserved_nano)
        else:
            budget.settle(item.reserved_nano, 0)
            # A reply without usage (some servers' streams) is taken to have used what was booked.
            self._limits.settle(item.est_tokens, item.est_tokens if verdict.kind is None else 0)
        item.reserved_nano = 0

        parsed = None
        if verdict.kind is None and item.schema is not None:
            parsed, problem = validate_reply(body, item.schema)
            if problem is not None:
                verdict = Verdict(ErrorKind.INVALID_OUTPUT, problem, body)
        if verdict.kind == ErrorKind.INVALID_OUTPUT:
            item.schema_failures += 1
        kind = verdict.kind
        trace = self._trace

        def log(outcome: str, **wait: Any) -> None:
            if trace is not None:
                trace.attempt(item.custom_id, item.attempts, status=status, kind=kind, latency_s=latency,
                              usage=usage, message=verdict.message, outcome=outcome, **wait)

        if kind is None:
            usage = usage or response_cost(None, None, self.pre.prices)
            log("done")
            raw_body = raw.strip()
            record = success_record(item, raw_body, body, usage, latency, parsed=parsed, ttft_s=ttft_s)
            self._writer.result(record, raw_body)
            self.pre.state.done_ids.add(item.custom_id)
            self._limits.on_success()
            self._finish(item, None, usage)
            return
        if kind == ErrorKind.RATE_LIMITED:
            self._on_rate_limited(verdict)
        if kind in RETRYABLE_KINDS:
            if self.stop_kind is not None:
                log("left")
                self._leave_unfinished(item)  # not retried now: the rerun will
                return
            exhausted = kind == ErrorKind.INVALID_OUTPUT and item.schema_failures > self.config.schema_retries
            if item.attempts < self.config.max_attempts and not exhausted:
                wait = retry_wait(
                    verdict, item.attempts, base=self.config.backoff_base_s, cap=self.config.backoff_cap_s
                )
                reason = "server asked (Retry-After or reset header)" if verdict.retry_after is not None \
                    else "exponential backoff with full jitter"
                log("retry", wait_s=wait, wait_reason=reason)
                self._emit(Retrying(item.custom_id, item.attempts, kind, wait, verdict.message))
                self._schedule_retry(item, wait)
                return
        if kind == ErrorKind.MODEL_UNAVAILABLE:
            self._mark_unavailable(item.model, verdict)
        log("failed")
        record = error_record(
            item.custom_id, item.line, kind, verdict.message, status=status, body=body,
            usage=usage, request=item, latency_s=latency,
        )
        self._writer.error(record)
        if kind in _STOP_KINDS:
            hint = stop_hint(self.config, kind, self._redact(verdict.message), key_sent=self.pre.key_sent)
            self.stop(kind, hint)
        self._finish(item, kind, usage)

    def _on_rate_limited(self, verdict: Verdict) -> None:
        limits = self._limits
        paused_before = limits.paused_until
        if not limits.on_rate_limited(
            verdict.retry_after, over_limit=verdict.over_limit, upstream=verdict.upstream
        ):
            return
        pause = limits.paused_until - time.monotonic()
        rate = limits.requests.rate
        if limits.paused_until > paused_before and pause >= 1.0:
            self._emit(Notice(f"paused {pause:.0f} s: the server's rate limit (429, Retry-After)"))
        elif rate is not None:
            self._emit(Notice(f"slowed to {rate * 60:,.0f} requests/min: the server's rate limit "
                              "(429s)"))

    def _schedule_retry(self, item: Request, wait: float) -> None:
        group = self._group
        assert group is not None, "retries are scheduled while the pipeline runs"
        task = group.start(self._retry_after(item, wait))
        self._waiting_retries.add(task)
        task.add_done_callback(self._waiting_retries.discard)

    async def _retry_after(self, item: Request, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
        except asyncio.CancelledError:
            self._leave_unfinished(item)  # a stop: the rerun sends it
            return
        if not self._queue.put_retry(item):
            self._leave_unfinished(item)

    def _mark_unavailable(self, model: str, verdict: Verdict) -> None:
        if model in self.unavailable:
            return
        self.unavailable[model] = verdict.fallback_models
        fallbacks = ", ".join(verdict.fallback_models) or "none listed"
        message = self._redact(verdict.message)
        self._emit(Notice(f"model {model} is not available ({message}); its lines are not sent. "
                          f"Fallback models: {fallbacks}"))

    def _finish(self, item: Request, kind: str | None, usage: dict[str, Any] | None) -> None:
        self._outstanding -= 1
        tokens = (usage or {}).get("total_tokens") or 0
        self._emit(Finished(item.custom_id, kind, tokens, item.billed_usd))
        self._close_if_done()

    def _leave_unfinished(self, item: Request) -> None:
        self._outstanding -= 1
        self.summary.not_run += 1
        self._close_if_done()
