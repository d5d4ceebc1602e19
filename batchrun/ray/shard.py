"""One shard: the single-process engine on its own event loop, fed and drained by the driver.

``Shard`` is a plain class that the driver makes a Ray actor (a threaded one: its methods run
in Ray's threads while the engine runs ``uvloop`` in a thread of its own, because a sync actor's
methods already run inside an event loop). The engine is ``engine.pipeline.Pipeline`` with four seams replaced:
the reader takes requests the driver sent, the limits are leases from the coordinator, the budget
is an allowance from it, and records go to an outbox the driver empties and acknowledges. What
the single-process preflight does (key, output, prices) the driver has done once for all shards.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading
import traceback
from typing import Any

from batchrun import __version__
from batchrun.config import JobConfig
from batchrun.engine.budget import Budget, from_nano
from batchrun.engine.pipeline import Pipeline
from batchrun.engine.preflight import Preflight
from batchrun.engine.redact import Redactor
from batchrun.engine.tasks import TaskGroup
from batchrun.engine.writer import Writer, dumps_record
from batchrun.errors import ErrorKind
from batchrun.events import Event, Notice, Planned, Retrying
from batchrun.fdlimit import fit_open_files
from batchrun.ledger import ResumeState
from batchrun.pricing import PriceBook
from batchrun.ray.coordinator import Grant, Report
from batchrun.ray.leases import BudgetOut, LeaseClient, LeasedGate, LeasedLimits
from batchrun.records import Request
from batchrun.summary import Summary
from batchrun.transport import Transport
from batchrun.units import usd

__all__ = ["Outbox", "OutboxWriter", "Shard", "ShardBudget", "ShardPipeline", "summary_view"]

_BATCH = 256  # records per reply to the driver
_POLL_S = 0.02  # how long an exchange waits for a record before answering empty


def summary_view(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of a record the driver's summary and progress read (not the whole body)."""
    error = record.get("error")
    usage = record.get("usage")
    return {
        "custom_id": record.get("custom_id"),
        "error": {"code": error.get("code")} if isinstance(error, dict) else None,
        "usage": {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "cost_usd")}
        if isinstance(usage, dict) else None,
        "billed_usd": record.get("billed_usd"),
        "attempts": record.get("attempts"),
        "latency_s": record.get("latency_s"),
    }


class Outbox:
    """Finished records waiting for the driver, numbered; thread-safe (engine thread, Ray threads)."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._records: collections.deque[tuple[int, str, bytes, dict[str, Any]]] = collections.deque()
        self._events: list[Event] = []
        self._next = 1
        self._sent = 0  # the last number handed to the driver
        self.finished = False

    def post(self, kind: str, line: bytes, view: dict[str, Any]) -> None:
        with self._ready:
            self._records.append((self._next, kind, line, view))
            self._next += 1
            self._ready.notify()

    def forward(self, event: Event) -> None:
        """Keep the events the driver shows (its own ``Finished`` come from the records)."""
        if isinstance(event, (Notice, Retrying)):
            with self._ready:
                self._events.append(event)

    def finish(self) -> None:
        with self._ready:
            self.finished = True
            self._ready.notify()

    def take(self, acked: int, timeout: float) -> tuple[int, list[tuple[str, bytes, dict[str, Any]]], int, list[Event]]:
        """Forget records up to ``acked``; wait a little for new ones; return (freed, batch, last, events)."""
        with self._ready:
            freed = 0
            while self._records and self._records[0][0] <= acked:
                self._records.popleft()
                freed += 1
            self._ready.wait_for(lambda: self._next - 1 > self._sent or self.finished, timeout)
            batch = [r for r in self._records if r[0] > self._sent][:_BATCH]
            if batch:
                self._sent = batch[-1][0]
            events, self._events = self._events, []
            return freed, [(kind, line, view) for _, kind, line, view in batch], self._sent, events

    def empty_after(self, seq: int) -> bool:
        with self._ready:
            return self._next - 1 <= seq


class OutboxWriter(Writer):
    """The writer seam of a shard: records go to the outbox, each keeping its slot until written."""

    def __init__(self, outbox: Outbox, redactor: Redactor, summary: Summary, gate: LeasedGate) -> None:
        super().__init__(None, redactor, summary)  # type: ignore[arg-type]  # no ledger here
        self._outbox = outbox
        self._gate = gate
        self.posted = 0

    def result(self, record: dict[str, Any], raw_body: bytes | None = None) -> None:
        self._post("result", record, dumps_record(record, raw_body))

    def error(self, record: dict[str, Any]) -> None:
        self._post("error", record, dumps_record(record))

    def _post(self, kind: str, record: dict[str, Any], line: bytes) -> None:
        self._gate.hold()
        self.posted += 1
        self._outbox.post(kind, self._redact(line), summary_view(record))

    @property
    def pending(self) -> bool:
        return False

    def flush(self) -> None:
        return None

    async def serve(self, before_sync: Any = None) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()


class ShardBudget(Budget):
    """The budget seam of a shard: an allowance leased from the coordinator (``LeaseClient``)."""

    def __init__(self, client: LeaseClient, limit_usd: float | None) -> None:
        super().__init__(limit_usd)
        self._client = client

    def settle(self, reserved: int, cost: int) -> None:
        if self.capped:
            self._client.spend(reserved, cost)

    def spent_usd(self) -> float:
        return from_nano(self._client.spent_total_units)


class ShardPipeline(Pipeline):
    """The engine's pipeline with the driver as its reader and writer, the coordinator as its limits."""

    def __init__(self, pre: Preflight, *, client: LeaseClient, outbox: Outbox,
                 inbox: asyncio.Queue[list[Request] | None]) -> None:
        summary = Summary()
        limits = LeasedLimits(client)
        writer = OutboxWriter(outbox, pre.redactor, summary, limits.gate)
        super().__init__(pre, summary=summary, limits=limits,  # type: ignore[arg-type]
                         budget=pre.budget, writer=writer, emit=outbox.forward)
        self._client = client
        self._inbox = inbox
        self._gate = limits.gate
        self._outbox_writer = writer
        self.received = 0
        self.left = 0  # requests given up for the rerun (a stop, a model gone)
        client.demand = self._demand

    def _demand(self) -> int:
        return max(self.received - self._outbox_writer.posted - self.left, 0)

    def queued(self) -> int:
        """Requests here that are not in flight: what the driver counts against the shard's share."""
        return max(self._demand() - (self._gate.active - self._gate.held), 0)

    async def run_shard(self) -> None:
        """Run until the driver ends the input (or the job stops) and every request is done."""
        async with TaskGroup() as group:
            leases = group.start(self._client.run())

            async def work() -> None:
                try:
                    await self.run()
                finally:
                    leases.cancel()

            group.start(work())
        with contextlib.suppress(Exception):  # a coordinator that is gone needs no goodbye
            await self._client.close()

    # -- the seams ----------------------------------------------------------------------

    async def _reader(self) -> None:
        while (batch := await self._inbox.get()) is not None and self.stop_kind is None:
            self.received += len(batch)
            for item in batch:
                if self.stop_kind is not None or item.model in self.unavailable:
                    self.left += 1  # the driver counts it as not run
                    continue
                self._outstanding += 1
                await self._queue.put(item)
        self._reader_done = True
        self._close_if_done()

    async def _worker(self) -> None:
        queue = self._queue
        while (item := await queue.get()) is not None:
            if self._budget.capped and not await self._book(item):
                continue
            await self._attempt(item)

    async def _book(self, item: Request) -> bool:
        """Book the request's worst case from the allowance before it waits for its turn."""
        worst = self._worst_case(item)
        if worst is None:
            return False
        try:
            await self._client.book(worst)
        except BudgetOut:
            self.stop(
                ErrorKind.BUDGET_EXCEEDED,
                f"budget reached: {usd(from_nano(self._client.spent_total_units))} of the job's "
                f"${self.config.max_cost_usd:g} spent (runs before included), and the next request "
                f"could cost up to {usd(from_nano(worst))}; raise --max-cost and run again to resume",
            )
            self._leave_unfinished(item)
            return False
        item.reserved_nano = worst
        return True

    def _reserve_budget(self, item: Request) -> bool:
        return True  # booked by _book before the request waited for its turn

    def _leave_unfinished(self, item: Request) -> None:
        if item.reserved_nano:
            self._client.refund(item.reserved_nano)
            item.reserved_nano = 0
        self.left += 1
        super()._leave_unfinished(item)

    def outcome(self) -> dict[str, Any]:
        return {"stop_kind": self.stop_kind, "stop_message": self.stop_message,
                "unavailable": dict(self.unavailable), "lease_calls": self._client.calls}


class Shard:
    """The actor: ``start`` runs the engine in a thread; ``exchange`` feeds it and drains it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self._outbox = Outbox()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pipeline: ShardPipeline | None = None
        self._inbox: asyncio.Queue[list[Request] | None] | None = None
        self._ready = threading.Event()
        self._outcome: dict[str, Any] | None = None

    def where(self) -> dict[str, Any]:
        """This actor's node, process and batchrun version (the driver checks they match)."""
        import ray

        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "version": __version__}

    def start(self, config: JobConfig, prices: PriceBook, api_key: str | None, coordinator: Any,
              env_proxy: bool) -> None:
        """Start the engine (the key arrives here, in a call, never in the actor's creation spec)."""
        index = self.index

        async def lease(report: Report) -> Grant:
            return await asyncio.wrap_future(coordinator.lease.remote(index, report).future())

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._inbox = asyncio.Queue()
            client = LeaseClient(lease, budget=config.max_cost_usd is not None)
            connections = fit_open_files(config.concurrency).connections  # a worker's own fd limit
            async with Transport(
                config.base_url, api_key, connections=connections, timeout_s=config.timeout_s,
                headers=config.headers, stream_idle_s=config.stream_idle_s, env_proxy=env_proxy,
            ) as transport:
                pre = Preflight(
                    config, config.base_url, Redactor(api_key), None, {}, ResumeState(),  # type: ignore[arg-type]
                    transport, prices, ShardBudget(client, config.max_cost_usd),
                    Planned("", 0, False, 0), key_sent=bool(api_key),
                )
                self._pipeline = ShardPipeline(pre, client=client, outbox=self._outbox, inbox=self._inbox)
                self._ready.set()
                await self._pipeline.run_shard()

        def work() -> None:
            try:
                _event_loop_runner()(main())
                assert self._pipeline is not None
                self._outcome = self._pipeline.outcome()
            except BaseException:  # handed to the driver: it stops the job with it
                self._outcome = {"error": traceback.format_exc(limit=8)}
            finally:
                self._ready.set()
                self._outbox.finish()

        threading.Thread(target=work, name=f"batchrun-shard-{index}", daemon=True).start()
        self._ready.wait()

    def exchange(self, acked: int, requests: list[Request], end: bool, stop: tuple[str, str] | None,
                 unavailable: dict[str, tuple[str, ...]]) -> dict[str, Any]:
        """Take new requests, the driver's acknowledgement and orders; give back finished records."""
        loop, pipeline, inbox = self._loop, self._pipeline, self._inbox
        running = loop is not None and pipeline is not None and inbox is not None and self._outcome is None
        if running:
            assert loop is not None and pipeline is not None and inbox is not None
            calls: list[Any] = []
            if unavailable:
                calls.append(lambda: [pipeline.unavailable.setdefault(m, f) for m, f in unavailable.items()])
            if stop is not None:
                calls.append(lambda: pipeline.stop(*stop))
            if requests:
                calls.append(lambda: inbox.put_nowait(requests))
            if end:
                calls.append(lambda: inbox.put_nowait(None))
            for call in calls:
                _call_soon(loop, call)
        freed, records, last, events = self._outbox.take(acked, _POLL_S)
        if freed and running and loop is not None and pipeline is not None:
            _call_soon(loop, lambda: pipeline._gate.acked(freed))
        done = self._outcome is not None and self._outbox.empty_after(last)
        stopped = pipeline is not None and pipeline.stop_kind is not None
        return {
            "records": records, "last": last, "events": events,
            "queued": (pipeline.queued() if pipeline is not None else 0) + len(requests),
            "unavailable": dict(pipeline.unavailable) if pipeline is not None else {},
            "stop": (pipeline.stop_kind, pipeline.stop_message) if stopped and pipeline else None,
            "outcome": self._outcome if done else None,
        }


def _call_soon(loop: asyncio.AbstractEventLoop, call: Any) -> None:
    """Run ``call`` on the engine's loop; nothing when the engine just ended (its loop closed)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(call)


def _event_loop_runner() -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run
