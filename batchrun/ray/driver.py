"""The driver of a sharded job: reads the input once, routes requests to shards, writes the output.

It is the single writer of the ONE results file and errors file at ``-o``: shards stream their
finished records back in small batches, the driver appends them (the same ``Ledger`` as a
single-process run, so the same resume, repair and lock) and only then acknowledges them, which
frees the shard's in-flight slots. The nodes therefore need no shared filesystem, and the output
is a checkpoint exactly as without Ray: a rerun, with or without ``--ray``, resumes it.

Everything before the first request (key, lock, manifest, prices, plan) is ``Runner``'s own; this
class replaces the pipeline only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from dataclasses import replace
from typing import Any

import orjson

from batchrun.config import JobConfig
from batchrun.errors import PER_LINE_VERDICTS, ConfigError
from batchrun.events import EventHandler, Finished, Notice, Planned
from batchrun.idset import IdSet
from batchrun.inputs import iter_lines, open_input
from batchrun.ledger import ResumeState, read_records
from batchrun.ray.cluster import connect, import_ray
from batchrun.ray.coordinator import Coordinator, to_units
from batchrun.ray.shard import Shard
from batchrun.ray.sharding import check_resume, manifest_entry, shard_of
from batchrun.records import InputParser, InvalidLine, Request
from batchrun.runner import Runner

__all__ = ["RayDriver"]

MAX_RESTARTS = 3  # per shard; then the job stops (exit 3) and a rerun resumes it
_START_TIMEOUT_S = 120.0


class RayDriver(Runner):
    """Runs one job as ``shards`` actors on a Ray cluster, with one coordinator and one output."""

    def __init__(self, config: JobConfig, *, api_key: str | None = None,
                 on_event: EventHandler | None = None) -> None:
        if config.log_path is not None:
            raise ConfigError("--log is not available with --ray yet: drop one of them")
        self._ray = import_ray(config.ray_address or "auto")
        super().__init__(config, api_key=api_key, on_event=on_event)
        self.shards = 0
        self.startup_s = 0.0
        self.restarts = 0
        self.nodes = 0
        self._manifest_doc: dict[str, Any] = {}
        self._stack: contextlib.AsyncExitStack | None = None
        self._shard_url = ""
        self._shard_key: str | None = None
        self._actors: list[Any] = []
        self._actor_class: Any = None
        self._coordinator: Any = None
        self._buffers: list[collections.deque[Request]] = []
        self._unfinished: list[dict[str, Request]] = []
        self._room: list[asyncio.Event] = []
        self._running = 0  # shards not finished yet
        self._seen_notices: set[str] = set()

    # -- before the first request: Runner's, plus the cluster ------------------------------

    async def _endpoint(self, stack: contextlib.AsyncExitStack) -> tuple[str, str | None]:
        base_url, api_key = await super()._endpoint(stack)
        self._stack, self._shard_url, self._shard_key = stack, base_url, api_key
        return base_url, api_key

    def _manifest(self) -> dict[str, Any]:
        self._manifest_doc = super()._manifest()  # the same dict Runner writes again at the end
        return self._manifest_doc

    def _plan(self, base_url: str, state: ResumeState) -> Planned:
        plan = super()._plan(base_url, state)
        self._start_cluster()
        nodes = f"{self.nodes} node" + ("s" if self.nodes != 1 else "")
        text = f"{plan.text} | ray: {self.shards} shards on {nodes} (ready in {self.startup_s:.1f} s)"
        return replace(plan, text=text)

    def _start_cluster(self) -> None:
        ray, config, ledger = self._ray, self.config, self._ledger
        assert ledger is not None and self._stack is not None
        manifest_path = ledger.paths["manifest"]
        on_disk = orjson.loads(manifest_path.read_bytes()) if manifest_path.exists() else {}
        shards = check_resume(on_disk, config.shards)
        started = time.monotonic()
        connect(config.ray_address or "auto")
        self._stack.callback(ray.shutdown)
        cpus = float(ray.cluster_resources().get("CPU", 0.0))
        shards = shards or max(1, int(cpus))
        if shards > config.concurrency:
            raise ConfigError(f"--shards {shards} is more than --concurrency {config.concurrency}: "
                              "each shard needs at least one request in flight")
        self.shards = shards
        self._manifest_doc["sharding"] = manifest_entry(shards)
        ledger.write_manifest({**on_disk, **self._manifest_doc})
        spent = to_units(self._billed_so_far()) if config.max_cost_usd is not None else 0
        self._coordinator = ray.remote(Coordinator).options(num_cpus=0).remote(
            shards=shards, concurrency=config.concurrency, rpm=config.rpm, tpm=config.tpm,
            budget_units=None if config.max_cost_usd is None else to_units(config.max_cost_usd),
            spent_units=spent,
        )
        # One shard per CPU at most, spread over the nodes; a restarted shard takes its place.
        self._actor_class = ray.remote(Shard).options(
            num_cpus=min(1.0, cpus / shards) if cpus else 0, max_concurrency=4, scheduling_strategy="SPREAD",
        )
        self._actors = [self._actor_class.remote(index) for index in range(shards)]
        try:
            where = ray.get([actor.where.remote() for actor in self._actors], timeout=_START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise ConfigError(f"the Ray cluster did not start {shards} shards in {_START_TIMEOUT_S:g} s "
                              f"({cpus:g} CPUs): lower --shards") from None
        versions = {w["version"] for w in where}
        if versions != {self._version()}:
            raise ConfigError(f"the Ray workers run batchrun {', '.join(sorted(versions))}, this is "
                              f"{self._version()}: install the same batchrun[ray] on every node")
        self.nodes = len({w["node"] for w in where})
        self.startup_s = time.monotonic() - started

    def _version(self) -> str:
        from batchrun import __version__

        return __version__

    def _billed_so_far(self) -> float:
        """What the output's records already billed: the budget is the job's, not this run's."""
        assert self._ledger is not None
        total = 0.0
        for key in ("results", "errors"):
            for _, record in read_records(self._ledger.paths[key]):
                if isinstance(record, dict) and isinstance(record.get("billed_usd"), (int, float)):
                    total += record["billed_usd"]
        return total

    # -- the pipeline: route, drive the shards, write ---------------------------------------

    async def _pipeline(self, state: ResumeState) -> None:
        skip_ids = state.done_ids
        kept = [] if self.config.retry_failed else [
            custom_id for custom_id, kind in state.failed.items() if kind in PER_LINE_VERDICTS
        ]
        if kept:
            skip_ids = skip_ids.copy()
            for custom_id in kept:
                skip_ids.add(custom_id)
        shards = self.shards
        self._buffers = [collections.deque() for _ in range(shards)]
        self._unfinished = [{} for _ in range(shards)]
        self._room = [asyncio.Event() for _ in range(shards)]
        self._running = shards
        await asyncio.gather(*(self._start_shard(actor) for actor in self._actors))
        writer = asyncio.ensure_future(self._writer())
        tasks = [asyncio.ensure_future(self._route(skip_ids))]
        tasks += [asyncio.ensure_future(self._drive(index)) for index in range(shards)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            self.summary.not_run += sum(map(len, self._buffers)) + sum(map(len, self._unfinished))
            self._closing = True
            self._wake_writer.set()
            await writer
        stats = await _result_of(self._coordinator.stats.remote())
        self._emit(Notice(f"ray: {shards} shards, {stats['calls']:,} coordinator calls, "
                          f"{self.restarts} restarts"))

    async def _start_shard(self, actor: Any) -> None:
        config = replace(self.config, base_url=self._shard_url, log_path=None)
        await _result_of(actor.start.remote(config, self._prices, self._shard_key, self._coordinator,
                                            not self.config.use_sim))

    def _share(self) -> int:
        return math.ceil(self.config.concurrency / max(self._running, 1))

    async def _route(self, skip_ids: IdSet) -> None:
        """Read the input once; send each request to the shard its id hashes to."""
        config = self.config
        parser = InputParser(
            model=config.model, params=config.params, system=config.system,
            template=config.template, skip_ids=skip_ids,
            budget_set=config.max_cost_usd is not None, keep_fields=config.keep_fields,
            schema=config.schema, ask_stream_usage=not config.speaks_openrouter,
        )
        read = 0
        with open_input(config.input) as stream:
            for line, raw in iter_lines(stream):
                if self._stop_kind is not None or (config.limit is not None and read >= config.limit):
                    break
                read += 1
                if not read & 1023:
                    await asyncio.sleep(0)
                item = parser.parse(raw, line)
                if item is None:
                    continue
                if isinstance(item, InvalidLine):
                    self._finish_invalid(item)
                elif item.model in self._unavailable:
                    self._skipped_unavailable += 1
                else:
                    index = shard_of(item.custom_id, self.shards)
                    buffer = self._buffers[index]
                    buffer.append(item)
                    while len(buffer) >= max(2 * self._share(), 64) and self._stop_kind is None:
                        self._room[index].clear()
                        await self._room[index].wait()
        self._reader_done = True
        for event in self._room:
            event.set()

    async def _drive(self, index: int) -> None:
        """Feed one shard, write what it finished, restart it when it dies; until it ends."""
        ray = self._ray
        acked, room, ended = 0, self._share(), False
        buffer, outstanding = self._buffers[index], self._unfinished[index]
        while True:
            feed = [buffer.popleft() for _ in range(min(max(room, 0), len(buffer)))]
            for item in feed:
                outstanding[item.custom_id] = item
            if feed:
                self._room[index].set()
            end = self._reader_done and not buffer and not ended
            stop = (self._stop_kind, self._stop_message) if self._stop_kind is not None else None
            if stop is not None and not ended:
                end = True
            try:
                reply = await _result_of(self._actors[index].exchange.remote(
                    acked, feed, end, stop, dict(self._unavailable)))
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                if not await self._restart(index, exc):
                    return
                acked, room, ended = 0, self._share(), False
                continue
            ended = ended or end
            self._take(index, reply)
            acked = reply["last"]
            room = max(self._share(), 1) - reply["queued"]
            outcome = reply["outcome"]
            if outcome is not None:
                self._running -= 1
                if "error" in outcome:
                    last = outcome["error"].strip().splitlines()[-1]
                    self.stop("shard_failed", f"shard {index} failed ({last}); run again to resume")
                return

    def _take(self, index: int, reply: dict[str, Any]) -> None:
        outstanding = self._unfinished[index]
        for kind, line, view in reply["records"]:
            custom_id = view["custom_id"]
            outstanding.pop(custom_id, None)
            self.summary.add(view)
            if kind == "result":
                self._pending_results.append(self._redact(line))
                self._done_ids.add(custom_id)
            else:
                self._pending_errors.append(self._redact(line))
            error = view["error"]
            self._emit(Finished(custom_id, error["code"] if error else None))
        # Written (handed to the kernel) before the acknowledgement frees the shard's slots.
        self._flush()
        self._wake_writer.set()
        for event in reply["events"]:
            text = getattr(event, "message", None)
            if text is not None and (text.startswith("stopping:") or text in self._seen_notices):
                continue
            if text is not None:
                self._seen_notices.add(text)
            self._emit(event)
        for model, fallbacks in reply["unavailable"].items():
            self._unavailable.setdefault(model, tuple(fallbacks))
        if reply["stop"] is not None and self._stop_kind is None:
            self.stop(*reply["stop"])

    async def _restart(self, index: int, exc: BaseException) -> bool:
        """Replace a dead shard; its unfinished requests go to the new one. False: give up."""
        self.restarts += 1
        outstanding = self._unfinished[index]
        dead = self._actors[index]
        with contextlib.suppress(Exception):
            self._ray.kill(dead)
        await _result_of(self._coordinator.forget.remote(index))
        if self.restarts > MAX_RESTARTS * self.shards or self._stop_kind is not None:
            self._running -= 1
            if self._stop_kind is None:
                self.stop("shard_lost", f"shard {index} died again ({type(exc).__name__}); run again to resume")
            return False
        self._emit(Notice(f"shard {index} died ({type(exc).__name__}); starting it again, "
                          f"{len(outstanding):,} requests to send again"))
        actor = self._actor_class.remote(index)
        await self._start_shard(actor)
        self._actors[index] = actor
        self._buffers[index].extendleft(reversed(list(outstanding.values())))
        outstanding.clear()
        return True

    def stop(self, kind: str = "interrupted", message: str = "interrupted") -> None:
        super().stop(kind, message)
        for event in self._room:
            event.set()  # the reader stops waiting for room


async def _result_of(ref: Any) -> Any:
    """Await a Ray ObjectRef on this loop (whatever loop it is: uvloop included)."""
    return await asyncio.wrap_future(ref.future())
