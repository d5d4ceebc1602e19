"""The driver of a sharded job: reads the input once, routes requests to shards, writes the output.

It is the single writer of the ONE results file and errors file at ``-o``: shards stream their
finished records back in small batches, the driver appends them (the preflight's ``Ledger``, so
the same lock, repair and resume as a single-process run) and only then acknowledges them, which
frees the shard's in-flight slots. The nodes therefore need no shared filesystem, and the output
is the checkpoint exactly as without Ray: a rerun, with or without ``--ray``, resumes it.

Everything before the first request is the engine's own preflight, run once here; this module
adds the cluster (``ShardSet``) and replaces the pipeline's workers with the shards.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from dataclasses import replace
from typing import Any

from batchrun import __version__
from batchrun.config import JobConfig, api_key_from_env
from batchrun.engine.pipeline import Pipeline
from batchrun.engine.preflight import SIM_KEY, Preflight
from batchrun.engine.tasks import TaskGroup
from batchrun.engine.writer import Writer
from batchrun.errors import ConfigError, ErrorKind
from batchrun.events import EventHandler, Finished, Notice
from batchrun.limits import AdaptiveLimits
from batchrun.ray.cluster import connect, import_ray
from batchrun.ray.coordinator import Coordinator
from batchrun.ray.shard import Shard
from batchrun.ray.sharding import check_resume, manifest_entry, shard_of
from batchrun.records import Request
from batchrun.runner import Runner
from batchrun.summary import Summary

__all__ = ["DriverPipeline", "RayDriver", "ShardSet"]

MAX_RESTARTS = 3  # per shard on average; then the job stops (exit 3) and a rerun resumes it
_START_TIMEOUT_S = 120.0


class ShardSet:
    """The cluster side of one job: the coordinator and one actor per shard."""

    def __init__(self, config: JobConfig, pre: Preflight, stack: contextlib.AsyncExitStack, *,
                 on_disk: dict[str, Any], api_key: str | None) -> None:
        ray = self.ray = import_ray(config.ray_address or "auto")
        self.config = config
        self.pre = pre
        self._api_key = api_key
        asked = check_resume(on_disk, config.shards)  # before joining: a refusal costs nothing
        started = time.monotonic()
        connect(config.ray_address or "auto")
        stack.callback(ray.shutdown)
        cpus = float(ray.cluster_resources().get("CPU", 0.0))
        self.count: int = asked or max(1, int(cpus))
        count = self.count
        if count > config.concurrency:
            raise ConfigError(f"--shards {count} is more than --concurrency {config.concurrency}: "
                              "each shard needs at least one request in flight")
        budget = pre.budget
        self.coordinator = ray.remote(Coordinator).options(num_cpus=0).remote(
            shards=count, concurrency=config.concurrency, rpm=config.rpm, tpm=config.tpm,
            budget_units=budget.limit, spent_units=budget.spent,
        )
        # One shard per CPU at most, spread over the nodes; a restarted shard takes its place.
        self._actor_class = ray.remote(Shard).options(
            num_cpus=min(1.0, cpus / count) if cpus else 0, max_concurrency=4, scheduling_strategy="SPREAD",
        )
        self.actors = [self._actor_class.remote(index) for index in range(count)]
        try:
            where = ray.get([actor.where.remote() for actor in self.actors], timeout=_START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise ConfigError(f"the Ray cluster did not start {count} shards in {_START_TIMEOUT_S:g} s "
                              f"({cpus:g} CPUs): lower --shards") from None
        versions = {w["version"] for w in where}
        if versions != {__version__}:
            raise ConfigError(f"the Ray workers run batchrun {', '.join(sorted(versions))}, this is "
                              f"{__version__}: install the same batchrun[ray] on every node")
        self.nodes = len({w["node"] for w in where})
        self.startup_s = time.monotonic() - started
        self.restarts = 0

    def describe(self) -> str:
        return f"ray: {_count(self.count, 'shard')} on {_count(self.nodes, 'node')} (ready in {self.startup_s:.1f} s)"

    async def start(self, actor: Any) -> None:
        config = replace(self.config, base_url=self.pre.base_url, log_path=None)
        # The key travels as an argument of this call: not in the actor's creation spec, which
        # Ray keeps in its control store for restarts, nor in a runtime_env, which it logs.
        await result_of(actor.start.remote(config, self.pre.prices, self._api_key, self.coordinator,
                                           not self.config.use_sim))

    async def respawn(self, index: int) -> Any:
        """A new actor for shard ``index`` (the dead one is killed, its slots and money freed)."""
        with contextlib.suppress(Exception):
            self.ray.kill(self.actors[index])
        await result_of(self.coordinator.forget.remote(index))
        actor = self._actor_class.remote(index)
        await self.start(actor)
        self.actors[index] = actor
        return actor


class LinesWriter(Writer):
    """The writer with lines that shards already made: counted from their summary view."""

    def lines(self, kind: str, line: bytes, view: dict[str, Any]) -> None:
        self._summary.add(view)
        (self._results if kind == "result" else self._errors).append(self._redact(line))
        self._wake.set()


class DriverPipeline(Pipeline):
    """The pipeline whose workers are shards: route by id, feed each its share, write what returns."""

    def __init__(self, pre: Preflight, shards: ShardSet, *, summary: Summary, emit: EventHandler) -> None:
        config = pre.config
        writer = LinesWriter(pre.ledger, pre.redactor, summary)
        limits = AdaptiveLimits(concurrency=config.concurrency)  # unused: the coordinator's are
        super().__init__(pre, summary=summary, limits=limits, budget=pre.budget, writer=writer, emit=emit)
        self._lines = writer
        self._shards = shards
        count = shards.count
        self._buffers: list[collections.deque[Request]] = [collections.deque() for _ in range(count)]
        self._unfinished: list[dict[str, Request]] = [{} for _ in range(count)]
        self._room = [asyncio.Event() for _ in range(count)]
        self._running = count
        self._seen_notices: set[str] = set()
        self.lease_calls = 0
        self.exchanges = 0

    def stop(self, kind: str = ErrorKind.INTERRUPTED, message: str = "interrupted") -> None:
        super().stop(kind, message)
        for event in self._room:
            event.set()  # the reader stops waiting for room

    async def run(self) -> None:
        shards = self._shards
        await asyncio.gather(*(shards.start(actor) for actor in shards.actors))
        writer = self._writer
        try:
            async with TaskGroup() as group:
                group.start(self._serve_writer())
                try:
                    async with TaskGroup() as work:
                        work.start(self._reader())
                        for index in range(shards.count):
                            work.start(self._drive(index))
                finally:
                    writer.close()
        finally:
            writer.flush()
            self.summary.not_run += sum(map(len, self._buffers)) + sum(map(len, self._unfinished))
        stats = await result_of(shards.coordinator.stats.remote())
        self._emit(Notice(f"ray: {_count(shards.count, 'shard')}, {self.exchanges:,} exchanges with them, "
                          f"{stats['calls']:,} coordinator calls, {shards.restarts} restarts"))

    def _share(self) -> int:
        return math.ceil(self.config.concurrency / max(self._running, 1))

    async def _reader(self) -> None:
        """Read the input once (the engine's reader); ``_accept`` sends each request to its shard."""
        await super()._reader()
        for event in self._room:
            event.set()

    async def _accept(self, item: Request) -> None:
        """Route a request to the shard its id hashes to; wait while that shard has enough queued."""
        index = shard_of(item.custom_id, self._shards.count)
        buffer = self._buffers[index]
        buffer.append(item)
        while len(buffer) >= max(2 * self._share(), 64) and self.stop_kind is None:
            self._room[index].clear()
            await self._room[index].wait()

    async def _drive(self, index: int) -> None:
        """Feed one shard, write what it finished, restart it when it dies; until it ends."""
        ray = self._shards.ray
        acked, room, ended = 0, self._share(), False
        buffer, unfinished = self._buffers[index], self._unfinished[index]
        while True:
            feed = [buffer.popleft() for _ in range(min(max(room, 0), len(buffer)))]
            for item in feed:
                unfinished[item.custom_id] = item
            if feed:
                self._room[index].set()
            stop = (self.stop_kind, self.stop_message) if self.stop_kind is not None else None
            end = not ended and (stop is not None or (self._reader_done and not buffer))
            try:
                reply = await result_of(self._shards.actors[index].exchange.remote(
                    acked, feed, end, stop, dict(self.unavailable)))
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                if not await self._restart(index, exc):
                    return
                acked, room, ended = 0, self._share(), False
                continue
            ended = ended or end
            self.exchanges += 1
            self._take(index, reply)
            acked = reply["last"]
            room = self._share() - reply["queued"]
            outcome = reply["outcome"]
            if outcome is not None:
                self._running -= 1
                self.lease_calls += outcome.get("lease_calls", 0)
                if "error" in outcome:
                    last = outcome["error"].strip().splitlines()[-1]
                    self.stop("shard_failed", f"shard {index} failed ({last}); run again to resume")
                return

    def _take(self, index: int, reply: dict[str, Any]) -> None:
        unfinished = self._unfinished[index]
        done_ids = self.pre.state.done_ids
        for kind, line, view in reply["records"]:
            custom_id = view["custom_id"]
            unfinished.pop(custom_id, None)
            self._lines.lines(kind, line, view)
            if kind == "result":
                done_ids.add(custom_id)
            error, usage = view["error"], view["usage"] or {}
            tokens = (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0)
            self._emit(Finished(custom_id, error["code"] if error else None, tokens, view["billed_usd"] or 0.0))
        # Written (handed to the kernel) before the acknowledgement frees the shard's slots.
        self._writer.flush()
        for event in reply["events"]:
            text = getattr(event, "message", None)
            if text is not None and (text.startswith("stopping:") or text in self._seen_notices):
                continue
            if text is not None:
                self._seen_notices.add(text)
            self._emit(event)
        for model, fallbacks in reply["unavailable"].items():
            self.unavailable.setdefault(model, tuple(fallbacks))
        if reply["stop"] is not None and self.stop_kind is None:
            self.stop(*reply["stop"])

    async def _restart(self, index: int, exc: BaseException) -> bool:
        """Replace a dead shard; its unfinished requests go to the new one. False: give up."""
        shards = self._shards
        shards.restarts += 1
        unfinished = self._unfinished[index]
        if shards.restarts > MAX_RESTARTS * shards.count or self.stop_kind is not None:
            self._running -= 1
            with contextlib.suppress(Exception):
                await result_of(shards.coordinator.forget.remote(index))
            if self.stop_kind is None:
                self.stop("shard_lost", f"shard {index} died again ({type(exc).__name__}); "
                          "run again to resume")
            return False
        self._emit(Notice(f"shard {index} died ({type(exc).__name__}); starting it again, "
                          f"{len(unfinished):,} requests to send again"))
        try:
            await asyncio.wait_for(shards.respawn(index), _START_TIMEOUT_S)
        except (asyncio.TimeoutError, shards.ray.exceptions.RayError) as failure:
            self._running -= 1
            self.stop("shard_lost", f"shard {index} could not be started again "
                      f"({type(failure).__name__}); run again to resume")
            return False
        self._buffers[index].extendleft(reversed(list(unfinished.values())))
        unfinished.clear()
        return True


class RayDriver(Runner):
    """Runs one job as shards on a Ray cluster, with one coordinator and one output."""

    mode = "ray"

    def __init__(self, config: JobConfig, *, api_key: str | None = None,
                 on_event: EventHandler | None = None) -> None:
        if config.log_path is not None:
            raise ConfigError("--log is not available with --ray yet: drop one of them")
        import_ray(config.ray_address or "auto")  # no Ray: one line, before anything else
        super().__init__(config, api_key=api_key, on_event=on_event)

    async def _pipeline_for(
        self, pre: Preflight, stack: contextlib.AsyncExitStack, *, connections: int
    ) -> Pipeline:
        """Start the coordinator and the shards; the driver's pipeline feeds them and writes."""
        on_disk = _manifest_on_disk(pre)
        shards = ShardSet(self.config, pre, stack, on_disk=on_disk, api_key=self._shard_key())
        pre.manifest["sharding"] = manifest_entry(shards.count)  # kept by every later write
        pre.ledger.write_manifest({**on_disk, **pre.manifest})
        pre.plan = replace(pre.plan, text=f"{pre.plan.text} | {shards.describe()}")
        return DriverPipeline(pre, shards, summary=self.summary, emit=self._emit)

    def _shard_key(self) -> str | None:
        """The key the preflight used (it keeps only a redactor of it): the shards need it too."""
        if self.config.use_sim:
            return self._api_key or SIM_KEY
        return self._api_key or api_key_from_env(self.config)


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def _manifest_on_disk(pre: Preflight) -> dict[str, Any]:
    import orjson

    path = pre.ledger.paths["manifest"]
    return orjson.loads(path.read_bytes()) if path.exists() else {}


async def result_of(ref: Any) -> Any:
    """Await a Ray ObjectRef on this loop (whatever loop it is: uvloop included)."""
    return await asyncio.wrap_future(ref.future())
