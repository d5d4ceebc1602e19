"""Batch mode: a job through the provider's Batch API at the batch price, exactly once.

One loop, in one task: read the input into chunks (plan.py), submit each once with the journal
written first (journal.py), poll the open batches with backoff and jitter, collect each finished
one into the same results and errors files the sync mode writes (collect.py), and put what never
ran, or failed transiently, into a later batch. A submission whose reply was lost (a kill, a
timeout) is looked for before anything of it is sent again (``_recover``).

The results file stays the checkpoint: a record is written once, and a rerun skips the ids it
has. The journal says what may still complete: no line is put in a second batch while a batch
holding it may complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Container, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from batchrun.batch import batch_api
from batchrun.batch.info import ApiReply, BatchInfo
from batchrun.batch.journal import INTENT, SUBMITTED, Journal, Submission
from batchrun.batch.openai import OpenAIBatches
from batchrun.batch.openrouter import BatchApiError, OpenRouterBatches
from batchrun.batch.plan import ENDPOINT, BatchItem, Chunk
from batchrun.batch.reader import ChunkReader, PlanCount
from batchrun.batch.settle import settle_batch
from batchrun.batch.wire import SEND_ATTEMPTS, BatchWire, error_message, lowercase
from batchrun.config import JobConfig
from batchrun.engine.budget import Budget, from_nano, to_nano
from batchrun.engine.preflight import (
    Preflight,
    preflight,
)
from batchrun.engine.redact import Redactor
from batchrun.engine.writer import Writer
from batchrun.errors import ConfigError, ErrorKind, TransportFailure
from batchrun.events import BatchProgress, EventHandler, Finished, Notice, Planned
from batchrun.idset import IdSet
from batchrun.inputs import measure
from batchrun.ledger import read_records
from batchrun.pricing import Price, PriceBook
from batchrun.records import error_record
from batchrun.retry import parse_retry_after
from batchrun.runner import RunResult
from batchrun.summary import Summary
from batchrun.units import usd

__all__ = ["RECOVERY_POLLS", "BatchRunner", "batch_api"]

# A lost submission is looked for this many poll intervals after its t0 (240 s at the default
# 60 s: OpenRouter's list cache is 10 s, and a new batch was seen missing for about 3 minutes).
RECOVERY_POLLS = 4
# Against a public provider the wait is never shorter than this, whatever --poll-interval says:
# the longest lag seen there was about 3 minutes, and a shorter wait could pay for a batch twice.
PROVIDER_VISIBILITY_S = 300.0
_PUBLIC_HOSTS = ("openrouter.ai", "api.openai.com")
_NO_BATCH_ENDPOINT = ("does not have a :batch endpoint", "does not have an eligible :batch endpoint")


class _Stopped(Exception):
    """The job was stopped while waiting: unwind to the end of the run."""


@dataclass
class _Open:
    """A submitted batch being polled."""

    sub: Submission
    next_at: float
    interval: float
    seen_at: float  # when it was submitted or adopted: a 404 before the lag is over means "not yet"
    status: str | None = None


class BatchRunner:
    """Runs one job through a Batch API to the end (or an early stop) and reports how it went."""

    def __init__(
        self, config: JobConfig, *, api_key: str | None = None, on_event: EventHandler | None = None,
    ) -> None:
        self.config = config
        self.summary = Summary()
        self.api = batch_api(config)
        self._api_key = api_key
        self._emit = on_event or (lambda event: None)
        self._prices = PriceBook(config.pricing, builtin=config.builtin_prices)
        self._wake = asyncio.Event()
        self._stop_kind: str | None = None
        self._stop_message = ""
        self._redactor = Redactor(None)
        self._budget = Budget(None)
        self._writer: Writer | None = None
        self._pre: Preflight | None = None
        self._done = IdSet()
        # Input ids in batches that may still complete; kept compactly, as the done ids are.
        self._held = IdSet()
        self._retry: dict[str, tuple[int, float]] = {}  # id -> (attempts so far, billed so far)
        self._open: dict[str, _Open] = {}
        self._unavailable: dict[str, str] = {}  # model -> why it cannot go in a batch
        self._written_errors: dict[str, set[str]] = {}  # batch id -> ids with an error record of it
        self._not_sent = 0
        self._plan_count = PlanCount()  # what the plan's reading found
        self._planned: int | None = None  # the input's lines (None: an estimate, for gzip input)
        self._count = PlanCount()  # what the run's readings found
        self._journal: Journal | None = None
        self._wire: BatchWire | None = None
        self._client: OpenRouterBatches | OpenAIBatches | None = None
        self._counts = {"submitted": 0, "collected": 0}

    # -- control -------------------------------------------------------------------------

    def stop(self, kind: str = ErrorKind.INTERRUPTED, message: str = "interrupted") -> None:
        """Stop submitting and polling; batches at the provider keep running. Safe to call twice."""
        if self._stop_kind is None:
            self._stop_kind, self._stop_message = kind, message
            self._emit(Notice(f"stopping: {message}", important=True))
        self._wake.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep, unless the job is stopped first (then raise _Stopped)."""
        if self._stop_kind is not None:
            raise _Stopped
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(seconds, 0.0))
        if self._stop_kind is not None:
            raise _Stopped

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> RunResult:
        config = self.config
        async with contextlib.AsyncExitStack() as stack:
            # The engine's preflight, as for sync: endpoint, key, output + manifest, prices, budget.
            pre = await preflight(config, stack, api_key=self._api_key, emit=self._emit, connections=4)
            self._pre = pre
            self._prices, self._budget, self._redactor = pre.prices, pre.budget, pre.redactor
            self._writer = Writer(pre.ledger, pre.redactor, self.summary)
            journal = Journal(config.output)
            self._journal = journal
            stack.callback(journal.close)
            journal.open()
            if journal.repaired_bytes:
                self._emit(Notice(f"repaired the batch journal: cut a torn last line "
                                  f"({journal.repaired_bytes} bytes)"))
            self._done = pre.state.done_ids
            self.summary.already_done = len(pre.state.done_ids)
            self.summary.kept_failed = pre.kept_failures()
            self._wire = BatchWire(
                pre.transport, pause=self._pause, backoff_base_s=config.backoff_base_s,
                backoff_cap_s=max(config.backoff_cap_s, config.poll_interval_s),
            )
            send = self._wire.send
            self._client = OpenRouterBatches(send) if self.api == "openrouter" else OpenAIBatches(send)
            self._check_budget_prices()
            await self._probe(pre.transport.root)
            if pre.refused is not None:
                self.stop(ErrorKind.AUTH_ERROR, pre.refused)
            self._resume_journal()
            self._emit(self._plan(pre.base_url))
            try:
                await self._main()
            except _Stopped:
                pass
            finally:
                self.summary.close()
            still_failing = pre.ledger.compact_errors(self._done)
            pre.ledger.record_run(pre.manifest, pre.state, wall_s=self.summary.wall_s or 0.0,
                                  mode="batch")
        return self._result(still_failing)

    def _batch_price(self, model: str) -> tuple[Price | None, bool]:
        """The price a batch of ``model`` is budgeted at, and whether it is the batch price.

        With no batch price known the sync price is used: an upper bound, so a budget holds.
        """
        price = self._prices.batch_price(model, half_of_sync=self.api == "openai")
        if price is not None:
            return price, True
        return self._prices.get(model), False

    def _check_budget_prices(self) -> None:
        config = self.config
        if config.max_cost_usd is None:
            return
        if self._batch_price(config.model)[0] is None:
            raise ConfigError(
                f"--max-cost needs the price of {config.model}: add [pricing.\"{config.model}:batch\"] "
                "with prompt_per_m and completion_per_m to the job file"
            )

    async def _probe(self, root: str) -> None:
        """Refuse, before anything is submitted, a server without a Batch API or a key it refuses."""
        assert self._client is not None
        try:
            reply = await self._client.probe()
        except TransportFailure as failure:
            raise ConfigError(f"cannot reach the Batch API at {root}/batches ({failure.message})") from None
        if reply.status in (404, 405):
            raise ConfigError(
                f"{root} has no Batch API (GET {root}/batches answered {reply.status}): "
                "run this job with --mode sync"
            )
        if reply.status in (401, 403):
            message = self._redact(error_message(reply))
            self.stop(ErrorKind.AUTH_ERROR, f"the API key may not use the Batch API at {root} ({message}): "
                      "use a key that may, or run with --mode sync")

    # -- journal on resume ------------------------------------------------------------------

    def _resume_journal(self) -> None:
        assert self._journal is not None
        now = time.time()
        open_batch_ids: set[str] = set()
        for sub in self._journal.submissions.values():
            if sub.may_complete:
                for custom_id in sub.input_ids():
                    self._held.add(custom_id)
                self._budget.reserved += to_nano(sub.worst_usd)  # booked whatever the cap is now
            if sub.state == SUBMITTED and sub.batch_id:
                self._open[sub.nonce] = _Open(sub, now, self.config.poll_interval_s, now, sub.status)
                open_batch_ids.add(sub.batch_id)
        if open_batch_ids:
            assert self._pre is not None
            for _, record in read_records(self._pre.ledger.paths["errors"]):
                batch_id = record.get("batch_id") if isinstance(record, dict) else None
                if batch_id in open_batch_ids:
                    self._written_errors.setdefault(batch_id, set()).add(str(record.get("custom_id")))
        waiting = sum(1 for sub in self._journal.submissions.values() if sub.may_complete)
        if waiting:
            self._emit(Notice(f"{waiting} batch(es) from an earlier run may still complete: "
                              "collecting them before their lines are sent again"))

    # -- planning ----------------------------------------------------------------------------

    def _plan(self, base_url: str) -> Planned:
        """The plan line: lines, output, endpoint, mode, batches per model, and the cost.

        The cost is the estimate ``batchrun estimate`` makes (expected, and if every reply used
        max_tokens) at the batch price; ``--max-cost`` books the harder bound (body bytes as
        tokens) per batch before its POST.
        """
        config = self.config
        size = measure(config.input)
        lines = size.lines if config.limit is None else min(size.lines, config.limit)
        per_model: dict[str, int] = {}
        bound = 0.0
        for chunk in self._chunks(only=None, dry=True):
            per_model[chunk.model] = per_model.get(chunk.model, 0) + 1
            bound += chunk.worst_usd
        assert self._journal is not None
        waiting = sum(1 for sub in self._journal.submissions.values() if sub.may_complete)
        approx = "" if size.exact else "~"
        text = f"{approx}{lines:,} lines from {config.input.name} → {config.output.name}"
        if self._done:
            text += f" ({len(self._done):,} already done)"
        text += f" | {'simulator ' if config.use_sim else ''}{base_url} | mode batch ({self.api} Batch API)"
        batches = sum(per_model.values())
        models = ", ".join(f"{m}: {n}" for m, n in per_model.items())
        text += f" | {batches} batch{'es' if batches != 1 else ''} to submit" + (f" ({models})" if models else "")
        if waiting:
            text += f", {waiting} from an earlier run to collect"
        expected, high = self._plan_count.expected_usd, self._plan_count.high_usd
        worst: float | None = None
        if per_model and self._plan_count.unbounded == 0:
            worst = high
            text += f" | cost ~{usd(expected)} expected, ~{usd(high)} if every reply uses max_tokens"
            sources = sorted({self._price_source(m) for m in per_model})
            text += f" (estimate at {', '.join(sources)})"
        elif per_model:
            text += " | cost unknown (a line without max_tokens, or a model without a price)"
        if self._budget.capped:
            left = max(self._budget.left() or 0, 0) / 1e9
            text += f" | budget ${config.max_cost_usd:g} for the job, {usd(left)} left; "
            text += f"each batch books its bound first ({usd(bound)} in all)"
        self._planned = None if not size.exact else lines
        return Planned(text, lines, not size.exact, len(self._done), worst)

    def _price_source(self, model: str) -> str:
        half = self.api == "openai"
        where = self._prices.batch_source(model, half_of_sync=half)
        if where is not None:
            return f"the batch price from {where}"
        return f"the sync price from {self._prices.source(model)} (no batch price known: an upper bound)"

    def _chunks(self, *, only: dict[str, tuple[int, float]] | None, dry: bool) -> Iterator[Chunk]:
        """The input's requests still to send, as chunks (``dry``: for the plan, writing nothing)."""
        assert self._client is not None and self._pre is not None
        reader = ChunkReader(
            self.config, api=self.api, limits=self._client.limits,
            keeps_model=self._client.keeps_model_in_body, skip_ids=self._pre.skip_ids(),
            held=self._held, unavailable=self._unavailable,
            price_of=lambda model: self._batch_price(model)[0],
        )
        count = self._plan_count if dry else self._count
        on_invalid = None if dry or only is not None else lambda record: self._write_error(record, None)
        return reader.chunks(count, only=only, on_invalid=on_invalid)

    # -- the loop ----------------------------------------------------------------------------

    async def _main(self) -> None:
        assert self._journal is not None
        if self._stop_kind is not None:
            return
        await self._purge_leftovers()
        # Lost replies first: nothing of a submission is sent again before it is looked for.
        intents = [sub for sub in self._journal.submissions.values() if sub.state == INTENT]
        await asyncio.gather(*(self._recover(sub) for sub in intents))
        chunks: Iterator[Chunk] | None = self._chunks(only=None, dry=False)
        waiting: Chunk | None = None  # a chunk that waits for the budget
        while True:
            while chunks is not None and self._stop_kind is None:
                chunk = waiting or next(chunks, None)
                waiting = None
                if chunk is None:
                    chunks = None
                    break
                if chunk.model in self._unavailable:
                    self._not_sent += len(chunk.items)
                    continue
                chunk, rest = self._fit_budget(chunk)
                if chunk is None:
                    waiting = rest
                    break
                await self._submit(chunk)
                if rest is not None:
                    self._not_sent += len(rest.items)
                    self.stop(ErrorKind.BUDGET_EXCEEDED, self._budget_message())
            if self._stop_kind is not None:
                return
            if not self._open:
                if waiting is not None:
                    # Nothing open frees budget; _fit_budget sent what fits and stopped.
                    continue
                if chunks is None and self._retry:
                    only, self._retry = self._retry, {}
                    self._emit(Notice(f"{len(only):,} lines go into new batches (never ran, or failed "
                                      "transiently)"))
                    chunks = self._chunks(only=only, dry=False)
                    continue
                if chunks is None:
                    return
                continue
            await self._poll_due()

    def _fit_budget(self, chunk: Chunk) -> tuple[Chunk | None, Chunk | None]:
        """The part of the chunk the budget allows now, and the rest (None: nothing left over).

        While batches are open the whole chunk waits for them (they free what they did not
        spend); with none open, what fits is sent and the rest is not.
        """
        budget = self._budget
        left = budget.left()
        if left is None or to_nano(chunk.worst_usd) <= left:
            return chunk, None
        if self._open:
            return None, chunk
        taken: list[BatchItem] = []
        total = 0.0
        for item in chunk.items:
            if to_nano(total + item.worst_usd) > left:
                break
            taken.append(item)
            total += item.worst_usd
        rest = Chunk(chunk.key, chunk.model, chunk.items[len(taken):])
        if not taken:
            self._not_sent += len(rest.items)
            self.stop(ErrorKind.BUDGET_EXCEEDED, self._budget_message())
            return None, None
        return Chunk(chunk.key, chunk.model, taken), rest

    def _budget_message(self) -> str:
        budget = self._budget
        return (f"budget reached: {usd(budget.spent_usd())} spent and {usd(from_nano(budget.reserved))} "
                f"booked for open batches of ${self.config.max_cost_usd:g}; raise --max-cost and run "
                "again to resume")

    # -- submitting ----------------------------------------------------------------------------

    async def _submit(self, chunk: Chunk) -> None:
        """Journal the submission, POST it once, and journal the batch id (or what came back)."""
        journal, client, wire = self._journal, self._client, self._wire
        assert journal is not None and client is not None and wire is not None
        nonce = secrets.token_hex(6)
        items = [[it.custom_id, it.line, it.attempts, it.metadata, it.billed_usd] for it in chunk.items]
        journal.append(
            "submit", nonce, api=self.api, model=chunk.model, endpoint=ENDPOINT, count=len(items),
            t0=time.time(), worst_usd=chunk.worst_usd, items=items,
        )
        sub = journal.submissions[nonce]
        for custom_id in sub.input_ids():
            self._held.add(custom_id)
        self._budget.reserved += to_nano(sub.worst_usd)  # _fit_budget checked it fits
        bodies = [it.body for it in chunk.items]
        attempt = 0
        while True:
            attempt += 1
            try:
                reply = await client.submit(
                    sub, bodies, lambda file_id: journal.append("uploaded", nonce, file_id=file_id)
                )
            except TransportFailure as failure:
                # The batch may exist: look for it before anything is sent again.
                self._emit(Notice(f"no answer to the submission of {len(items):,} requests for "
                                  f"{chunk.model} ({failure.message}): looking for the batch"))
                await self._recover(sub)
                return
            if reply.ok and isinstance(reply.body, dict) and reply.body.get("id"):
                info = BatchInfo.from_json(reply.body)
                journal.append("submitted", nonce, batch_id=info.id, status=info.status)
                self._open_batch(sub, info.status)
                self._counts["submitted"] += 1
                self._emit(Notice(f"batch {info.id} submitted: {len(items):,} requests for {chunk.model}"))
                self._emit_progress()
                return
            if reply.status == 429 and attempt < SEND_ATTEMPTS:
                # A 429 answer means nothing was created (batch-wire Part C): the same POST again.
                wait = parse_retry_after(lowercase(reply.headers), reply.body, time.time())
                await self._pause(wait if wait is not None else wire.backoff(attempt))
                continue
            if reply.status >= 500 or reply.status == 429:
                self._emit(Notice(f"the submission got HTTP {reply.status}: looking for the batch "
                                  "before sending its lines again"))
                await self._recover(sub)
                return
            self._refused(sub, reply)
            return

    def _refused(self, sub: Submission, reply: ApiReply) -> None:
        """A submission the provider turned down for sure: no batch exists."""
        assert self._journal is not None
        message = self._redact(error_message(reply))
        items = self._end(sub, "rejected", status=reply.status, message=message)
        ids = len(items)
        if any(text in message for text in _NO_BATCH_ENDPOINT):
            self._unavailable[sub.model] = message
            self._not_sent += ids
            self._emit(Notice(f"model {sub.model} cannot run in a batch ({message}): its lines are not "
                              "sent; run them with --mode sync"))
        elif reply.status in (401, 403):
            self._not_sent += ids
            self.stop(ErrorKind.AUTH_ERROR, f"the API key may not submit batches ({message}): use a "
                      "key that may, or run with --mode sync")
        elif reply.status == 402:
            self._not_sent += ids
            self.stop(ErrorKind.INSUFFICIENT_CREDITS, f"out of credits for this batch ({message}): add "
                      "credits, then run again")
        elif reply.status == 413:
            self._not_sent += ids
            self.stop(ErrorKind.INVALID_REQUEST, f"the Batch API refused a batch of {ids:,} requests as too "
                      f"large ({message}): set max_batch_requests under [limits] lower, then run again")
        elif reply.status == 404:
            self._not_sent += ids
            self.stop(ErrorKind.MODEL_UNAVAILABLE, f"the Batch API refused the batch ({message}): "
                      "run with --mode sync")
        else:
            for custom_id, line, _attempts, metadata, *_ in items:
                record = error_record(
                    str(custom_id), int(line), ErrorKind.INVALID_REQUEST,
                    f"the Batch API refused the whole batch: {message}", status=reply.status,
                    body=reply.body if isinstance(reply.body, dict) else None, metadata=metadata,
                )
                self._write_error(record, None)
            self._flush_sync()

    def _end(self, sub: Submission, op: str, **fields: Any) -> list[list[Any]]:
        """Journal that a submission can no longer complete; free its ids and its booking.

        Returns its items (the journal forgets them, to keep a long job's memory flat).
        """
        assert self._journal is not None
        items = sub.items
        self._journal.append(op, sub.nonce, **fields)
        for custom_id, *_ in items:
            self._held.discard(str(custom_id))
        self._budget.settle(to_nano(sub.worst_usd), 0)
        return items

    def _emit_progress(self) -> None:
        counts = self._counts
        self._emit(BatchProgress(counts["submitted"], len(self._open), counts["collected"]))

    def _visibility_wait(self) -> float:
        """How long a batch may stay invisible (404, missing from the list) after its submission."""
        wait = RECOVERY_POLLS * self.config.poll_interval_s
        host = urlsplit(self.config.base_url).hostname or ""
        if host.endswith(_PUBLIC_HOSTS):
            wait = max(wait, PROVIDER_VISIBILITY_S)
        return wait

    def _open_batch(self, sub: Submission, status: str | None) -> None:
        now = time.time()
        interval = self.config.poll_interval_s
        self._open[sub.nonce] = _Open(sub, now + _jitter(interval / 2), interval, now, status)

    # -- recovering a lost reply -----------------------------------------------------------------

    async def _recover(self, sub: Submission) -> None:
        """Find the batch a submission may have made; adopt it, or give its lines up after the wait.

        The wait (RECOVERY_POLLS poll intervals after t0) covers the list cache and the lag before
        a new batch shows; it ends as soon as a match is found.
        """
        journal, client = self._journal, self._client
        assert journal is not None and client is not None
        interval = self.config.poll_interval_s
        # At least one poll interval of looking, even long after t0: a list answer cached (10 s on
        # OpenRouter) from before the batch showed could otherwise be the only one read.
        deadline = max(sub.t0 + self._visibility_wait(), time.time() + interval)
        claimed = {s.batch_id for s in journal.submissions.values() if s.batch_id and s is not sub}
        while True:
            found: list[BatchInfo] = []
            try:
                found = await client.candidates(sub, claimed)
            except (BatchApiError, TransportFailure) as exc:
                self._emit(Notice(f"listing batches failed ({exc}); trying again"))
            if found:
                info = found[0]
                journal.append("submitted", sub.nonce, batch_id=info.id, status=info.status, adopted=True)
                self._open_batch(sub, info.status)
                self._counts["submitted"] += 1
                self._emit(Notice(f"found batch {info.id} ({sub.count:,} requests for {sub.model}) "
                                  "made by a submission whose reply was lost: collecting it"))
                self._emit_progress()
                return
            if time.time() >= deadline:
                items = self._end(sub, "abandoned", message="no matching batch within the visibility wait")
                for custom_id, _line, attempts, _metadata, *rest in items:
                    self._retry[str(custom_id)] = (int(attempts), float(rest[0]) if rest else 0.0)
                self._emit(Notice(f"no batch was made by the lost submission of {sub.count:,} requests "
                                  f"for {sub.model}: its lines go into a new batch"))
                with contextlib.suppress(TransportFailure):
                    await client.discard(sub)
                return
            await self._pause(min(_jitter(interval / 2), max(deadline - time.time(), 0.0)))

    # -- polling ---------------------------------------------------------------------------------

    async def _poll_due(self) -> None:
        now = time.time()
        due = [ob for ob in self._open.values() if ob.next_at <= now]
        if not due:
            await self._pause(min(ob.next_at for ob in self._open.values()) - now)
            return
        for ob in due:
            if self._stop_kind is not None:
                return
            await self._poll(ob)

    async def _poll(self, ob: _Open) -> None:
        client, journal = self._client, self._journal
        assert client is not None and journal is not None
        sub = ob.sub
        assert sub.batch_id is not None
        interval = self.config.poll_interval_s
        try:
            reply = await client.get(sub.batch_id)
        except TransportFailure as failure:
            self._emit(Notice(f"polling {sub.batch_id} failed ({failure.message}); trying again"))
            ob.next_at = time.time() + _jitter(ob.interval)
            return
        if reply.status == 404:
            if time.time() - ob.seen_at < self._visibility_wait():
                ob.next_at = time.time() + _jitter(interval / 2)  # not visible yet (read-after-write lag)
                return
            del self._open[sub.nonce]
            items = self._end(sub, "abandoned", message="the batch is gone (404)")
            for custom_id, _line, attempts, _metadata, *rest in items:
                self._retry[str(custom_id)] = (int(attempts), float(rest[0]) if rest else 0.0)
            self._emit(Notice(f"batch {sub.batch_id} is gone at the provider: its lines go into a new batch"))
            return
        if reply.status == 402:
            self.stop(ErrorKind.INSUFFICIENT_CREDITS, f"batch {sub.batch_id} finished but its cost is above "
                      f"the balance ({self._redact(error_message(reply))}): add credits, then run again to "
                      "collect it")
            return
        if reply.status in (401, 403):
            self.stop(ErrorKind.AUTH_ERROR, f"the API key was refused reading {sub.batch_id} "
                      f"({self._redact(error_message(reply))}): set a valid key and run again")
            return
        if not reply.ok or not isinstance(reply.body, dict):
            ob.interval = min(ob.interval * 2, 10 * interval)
            ob.next_at = time.time() + _jitter(ob.interval)
            return
        info = BatchInfo.from_json(reply.body)
        if info.status != ob.status:
            journal.append("status", sub.nonce, batch_id=info.id, status=info.status, counts=info.counts)
            ob.status = info.status
            ob.interval = interval
            self._emit(Notice(f"batch {info.id}: {info.status} ({info.completed:,} done, "
                              f"{info.failed:,} failed of {info.total:,})"))
        else:
            ob.interval = min(ob.interval * 1.5, 10 * interval)  # unchanged: poll less often
        if info.terminal:
            await self._collect(ob, info)
        else:
            ob.next_at = time.time() + _jitter(ob.interval)

    # -- collecting -------------------------------------------------------------------------------

    async def _collect(self, ob: _Open, info: BatchInfo) -> None:
        """Write one record per row of a finished batch (skipping those written before), once."""
        client, journal = self._client, self._journal
        assert client is not None and journal is not None
        sub = ob.sub
        batch_id = str(sub.batch_id)
        rows: list[dict[str, Any]] = []
        if info.status != "failed":
            try:
                rows = await client.rows(info)
            except BatchApiError as exc:
                if exc.reply.status == 402:
                    self.stop(ErrorKind.INSUFFICIENT_CREDITS, f"the results of {batch_id} are withheld "
                              f"until its cost is paid ({self._redact(error_message(exc.reply))}): add credits, "
                              "then run again to collect them")
                else:
                    ob.next_at = time.time() + _jitter(ob.interval)
                    self._emit(Notice(f"reading the results of {batch_id} failed ({exc}); trying again"))
                return
        written_before = self._written_errors.get(batch_id, set())
        settled = settle_batch(
            sub, info, rows, price=self._batch_price(sub.model)[0], max_attempts=self.config.max_attempts,
            schema=self.config.schema, written=_Either(self._done, written_before), now=time.time(),
            redact=self._redact,
        )
        if settled.disowned:
            # Not one row carries our nonce: an adopted batch that was someone else's.
            journal.append("disowned", sub.nonce, batch_id=batch_id)
            del self._open[sub.nonce]
            self._emit(Notice(f"batch {batch_id} is not this job's (its ids lack the nonce): looking again"))
            await self._recover(sub)
            return
        failure = settled.failure
        if failure is not None and failure.scope == "model":
            self._unavailable[sub.model] = failure.message
            self._emit(Notice(f"model {sub.model} cannot run in a batch ({failure.message}): its lines "
                              "are not sent; run them with --mode sync"))
        for record, raw_body in settled.results:
            self._write_result(record, raw_body)
        for record in settled.errors:
            self._write_error(record, batch_id)
        self._retry.update(settled.retry)
        self._not_sent += settled.not_sent
        self._flush_sync()
        cost = settled.cost_usd
        del self._open[sub.nonce]
        self._end(sub, "collected", batch_id=batch_id, status=info.status, counts=info.counts,
                  cost_usd=cost)
        self._budget.spent += to_nano(cost)
        self._counts["collected"] += 1
        self._emit(Notice(f"batch {batch_id} collected: {info.status}, {len(settled.results):,} results, "
                          f"{len(settled.errors):,} errors, {len(settled.retry):,} to send again, "
                          f"{usd(cost)} billed"))
        self._emit_progress()
        if self.config.purge:
            await self._purge(sub, info)

    async def _purge(self, sub: Submission, info: BatchInfo | None) -> None:
        assert self._client is not None and self._journal is not None
        try:
            gone = await self._client.delete(sub, info)
        except TransportFailure as failure:
            self._emit(Notice(f"could not delete {sub.batch_id} ({failure.message}): a rerun tries again"))
            return
        if gone:
            self._journal.append("purged", sub.nonce, batch_id=sub.batch_id)
            self._emit(Notice(f"batch {sub.batch_id} deleted at the provider (--purge)"))

    async def _purge_leftovers(self) -> None:
        if not self.config.purge or self._journal is None:
            return
        for sub in list(self._journal.submissions.values()):
            if sub.state == "collected" and not sub.purged and sub.batch_id:
                await self._purge(sub, None)

    # -- writing ------------------------------------------------------------------------------------

    def _write_result(self, record: dict[str, Any], raw_body: bytes) -> None:
        assert self._writer is not None
        self._writer.result(record, raw_body)
        self._writer.flush()
        self._done.add(record["custom_id"])
        self._emit(Finished(record["custom_id"], None, _tokens(record), record["billed_usd"] or 0.0))

    def _write_error(self, record: dict[str, Any], batch_id: str | None) -> None:
        assert self._writer is not None
        if batch_id is not None:
            record["batch_id"] = batch_id
        self._writer.error(record)
        self._writer.flush()
        self._emit(Finished(record["custom_id"], record["error"]["code"], _tokens(record),
                            record["billed_usd"] or 0.0))

    def _flush_sync(self) -> None:
        """Everything written so far is on disk (fsync) before the journal says so."""
        assert self._writer is not None and self._pre is not None
        self._writer.flush()
        if self._writer.failure is not None:
            self.stop(self._writer.failure.kind, str(self._writer.failure))
            raise _Stopped
        self._pre.ledger.sync()

    def _redact(self, text: str) -> str:
        return self._redactor.text(text)

    # -- the wire -------------------------------------------------------------------------------------

    # -- the end -----------------------------------------------------------------------------------------

    def _result(self, still_failing: int) -> RunResult:
        summary = self.summary
        left = len(self._held) + len(self._retry)
        summary.not_run += self._not_sent + self._count.unavailable + left
        if self._planned is not None:
            # Every input line is accounted for: done before, kept as failed, finished now, or not
            # run (held by a batch still open, left by a stop, or for a model with no batch).
            unaccounted = self._planned - summary.already_done - summary.kept_failed - summary.finished
            summary.not_run = max(unaccounted, 0)
        kind, message = self._stop_kind, self._stop_message
        if kind is None and self._unavailable:
            kind = ErrorKind.MODEL_UNAVAILABLE
            names = ", ".join(sorted(self._unavailable))
            message = (f"model {names} has no batch endpoint: run its lines with --mode sync; "
                       f"{summary.not_run:,} lines were not sent")
        if kind == ErrorKind.INTERRUPTED:
            code = 130
            if self._open:
                message = (f"{len(self._open)} batch(es) keep running at the provider: run the same "
                           "command again to collect them")
                self._emit(Notice(message, important=True))
        elif kind is not None:
            code = 3
        elif still_failing:
            code = 1
            message = f"{still_failing:,} ids failed: see {self.config.errors_path.name}"
        else:
            code = 0
        return RunResult(summary, code, kind, message, self.config.output, self.config.errors_path)


class _Either:
    """Ids in either of two collections (done ids, and errors a batch already wrote)."""

    def __init__(self, first: Container[str], second: Container[str]) -> None:
        self._first, self._second = first, second

    def __contains__(self, item: object) -> bool:
        return item in self._first or item in self._second


def _tokens(record: dict[str, Any]) -> int:
    usage = record.get("usage") or {}
    return int(usage.get("total_tokens") or 0)


def _jitter(seconds: float) -> float:
    return seconds * random.uniform(0.8, 1.2)
