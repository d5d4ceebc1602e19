"""One shard: the single-process engine on its own event loop, fed and drained by the driver.

``Shard`` is a plain class that the driver makes a Ray actor (a threaded one: its methods run
in Ray's threads while the engine runs ``uvloop`` in a thread of its own, because a sync actor's
methods already run inside an event loop). The engine is ``Runner`` with four seams replaced:
the reader takes requests the driver sent, the limits are leases from the coordinator, the budget
is an allowance from it, and records go to an outbox the driver empties and acknowledges.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading
import traceback
from dataclasses import replace
from typing import Any

from batchrun import __version__
from batchrun.config import JobConfig
from batchrun.errors import ErrorKind
from batchrun.events import Event, Notice, Retrying
from batchrun.idset import IdSet
from batchrun.pricing import PriceBook
from batchrun.ray.coordinator import Grant, Report, to_units
from batchrun.ray.leases import BudgetOut, LeaseClient, LeasedLimits
from batchrun.records import Request
from batchrun.retry import Verdict
from batchrun.runner import Runner, _dumps_line
from batchrun.transport import Transport

__all__ = ["Outbox", "Shard", "ShardRunner", "summary_view"]

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

    def event(self, event: Event) -> None:
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


class ShardRunner(Runner):
    """The engine with the driver as its reader and writer and the coordinator as its limits."""

    def __init__(self, config: JobConfig, *, api_key: str | None, prices: PriceBook, client: LeaseClient,
                 outbox: Outbox, inbox: asyncio.Queue[list[Request] | None], env_proxy: bool) -> None:
        super().__init__(config, api_key=api_key, on_event=self._forward)
        self._outbox = outbox
        self._inbox = inbox
        self._prices = prices
        self._client = client
        self._limits = LeasedLimits(client)  # type: ignore[assignment]
        self._env_proxy = env_proxy
        self.received = 0
        self.finished = 0  # records posted, or requests left for the rerun
        self._secret = api_key.encode() if api_key and len(api_key) >= 8 else b""
        self._key_sent = bool(api_key)
        client.demand = self._demand

    def _forward(self, event: Event) -> None:
        if isinstance(event, (Notice, Retrying)):
            self._outbox.event(event)

    def _demand(self) -> int:
        return max(self.received - self.finished, 0)

    def queued(self) -> int:
        """Requests here that are not in flight: what the driver counts against the shard's share."""
        gate = self._limits.gate
        return max(self.received - self.finished - (gate.active - gate.held), 0)  # type: ignore[attr-defined]

    async def run_shard(self) -> None:
        """Run until the driver says the input ended (or the job stops) and every request is done."""
        config = self.config
        async with Transport(
            config.base_url, self._api_key, connections=config.concurrency, timeout_s=config.timeout_s,
            headers=config.headers, stream_idle_s=config.stream_idle_s, env_proxy=self._env_proxy,
        ) as transport:
            self._transport = transport
            leases = asyncio.ensure_future(self._client.run())
            try:
                await self._pipeline_or_lease_failure(leases)
            finally:
                leases.cancel()
                await asyncio.gather(leases, return_exceptions=True)
                with contextlib.suppress(Exception):  # a coordinator that is gone needs no goodbye
                    await self._client.close()

    async def _pipeline_or_lease_failure(self, leases: asyncio.Future[None]) -> None:
        from batchrun.ledger import ResumeState

        pipeline = asyncio.ensure_future(self._pipeline(ResumeState()))
        done, _ = await asyncio.wait({pipeline, leases}, return_when=asyncio.FIRST_COMPLETED)
        if leases in done and not pipeline.done():
            pipeline.cancel()  # the coordinator is gone: nothing more can be sent safely
            await asyncio.gather(pipeline, return_exceptions=True)
            leases.result()
        await pipeline

    # -- the seams ----------------------------------------------------------------------

    async def _reader(self, skip_ids: IdSet) -> None:
        while (batch := await self._inbox.get()) is not None and self._stop_kind is None:
            self.received += len(batch)
            for item in batch:
                if self._stop_kind is not None or item.model in self._unavailable:
                    self.finished += 1  # left for the rerun; the driver counts it as not run
                    continue
                self._outstanding += 1
                await self._queue.put(item)
        self._reader_done = True
        self._close_if_done()

    async def _writer(self) -> None:
        return None  # the driver writes: records leave through the outbox

    def _write_result(self, record: dict[str, Any], raw_body: bytes) -> None:
        self._post("result", record, _dumps_line(record, raw_body))

    def _write_error(self, record: dict[str, Any]) -> None:
        self._post("error", record, _dumps_line(record))

    def _post(self, kind: str, record: dict[str, Any], line: bytes) -> None:
        self._limits.gate.hold()  # type: ignore[attr-defined]
        self.finished += 1
        self._outbox.post(kind, self._redact(line), summary_view(record))

    def _leave_unfinished(self, item: Request) -> None:
        if item.reserved_usd:
            self._client.refund(to_units(item.reserved_usd))
            self._reserved_usd -= item.reserved_usd
            item.reserved_usd = 0.0
        self.finished += 1
        super()._leave_unfinished(item)

    async def _worker(self) -> None:
        queue = self._queue
        while (item := await queue.get()) is not None:
            if self.config.max_cost_usd is not None and not await self._book(item):
                continue
            await self._attempt(item)

    async def _book(self, item: Request) -> bool:
        """Book the request's worst case from the allowance before it waits for its turn."""
        models = (item.model, *item.models)
        prices = [self._prices.get(model) for model in models]
        if None in prices:
            unknown = models[prices.index(None)]
            self.stop(ErrorKind.BUDGET_EXCEEDED, f"no price known for {unknown}, so --max-cost cannot be kept")
            self._leave_unfinished(item)
            return False
        worst = max(price.cost(len(item.body), item.max_tokens or 0) for price in prices if price)
        units = to_units(worst)
        try:
            await self._client.book(units)
        except BudgetOut:
            spent = self._client.spent_total_units / 1e9
            limit = self.config.max_cost_usd
            self.stop(
                ErrorKind.BUDGET_EXCEEDED,
                f"budget reached: ${spent:.4f} spent of ${limit:g}, and the next request could "
                f"cost up to ${worst:.6f}; raise --max-cost and run again to resume",
            )
            self._leave_unfinished(item)
            return False
        item.reserved_usd = units / 1e9
        self._reserved_usd += item.reserved_usd
        return True

    def _reserve_budget(self, item: Request) -> bool:
        return True  # booked by _book before the request waited for its turn

    def _settle(self, item: Request, status: int | None, raw: bytes, verdict: Verdict, latency: float,
                ttft_s: float | None = None) -> None:
        reserved, spent_before = item.reserved_usd, self._spent_usd
        super()._settle(item, status, raw, verdict, latency, ttft_s)
        if reserved:
            self._client.spend(to_units(reserved), to_units(self._spent_usd - spent_before))

    def outcome(self) -> dict[str, Any]:
        return {"stop_kind": self._stop_kind, "stop_message": self._stop_message,
                "unavailable": dict(self._unavailable), "lease_calls": self._client.calls}


class Shard:
    """The actor: ``start`` runs the engine in a thread; ``exchange`` feeds it and drains it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self._outbox = Outbox()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: ShardRunner | None = None
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
            self._runner = ShardRunner(replace(config, log_path=None), api_key=api_key, prices=prices,
                                       client=client, outbox=self._outbox, inbox=self._inbox,
                                       env_proxy=env_proxy)
            self._ready.set()
            await self._runner.run_shard()

        def work() -> None:
            try:
                _event_loop_runner()(main())
                assert self._runner is not None
                self._outcome = self._runner.outcome()
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
        loop, runner, inbox = self._loop, self._runner, self._inbox
        if loop is not None and runner is not None and inbox is not None and self._outcome is None:
            calls: list[Any] = []
            if unavailable:
                calls.append(lambda: [runner._unavailable.setdefault(m, f) for m, f in unavailable.items()])
            if stop is not None:
                calls.append(lambda: runner.stop(*stop))
            if requests:
                calls.append(lambda: inbox.put_nowait(requests))
            if end:
                calls.append(lambda: inbox.put_nowait(None))
            for call in calls:
                loop.call_soon_threadsafe(call)
        freed, records, last, events = self._outbox.take(acked, _POLL_S)
        if freed and loop is not None and runner is not None and self._outcome is None:
            gate = runner._limits.gate
            loop.call_soon_threadsafe(gate.acked, freed)  # type: ignore[attr-defined]
        done = self._outcome is not None and self._outbox.empty_after(last)
        return {
            "records": records, "last": last, "events": events,
            "queued": runner.queued() + len(requests) if runner is not None else len(requests),
            "unavailable": dict(runner._unavailable) if runner is not None else {},
            "stop": (runner._stop_kind, runner._stop_message) if runner is not None and runner._stop_kind else None,
            "outcome": self._outcome if done else None,
        }


def _event_loop_runner() -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run
