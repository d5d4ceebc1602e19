"""The pipeline: one reader → a bounded pool of workers → one writer, in one task group.

The reader streams the input and skips ids the output already has; workers take requests
(retries first), wait for the limiter, send, classify and either finish the id or schedule its
retry; the writer appends finished records to the ledger in whole lines. Nothing here knows
about terminals: progress goes out as events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from batchrun import __version__
from batchrun.config import DEFAULT_KEY_ENV, JobConfig, api_key_from_env
from batchrun.errors import (
    PER_LINE_VERDICTS,
    RETRYABLE_KINDS,
    ConfigError,
    ErrorKind,
    JobStopped,
    TransportFailure,
)
from batchrun.events import EventHandler, Finished, Notice, Planned, Retrying
from batchrun.fdlimit import fit_open_files
from batchrun.idset import IdSet
from batchrun.inputs import fingerprint, iter_lines, measure, open_input, readable
from batchrun.ledger import MANIFEST_FORMAT, Ledger, ResumeState
from batchrun.limits import AdaptiveLimits
from batchrun.price_cache import age_text, read_prices, write_prices
from batchrun.pricing import PriceBook, response_cost, usage_of
from batchrun.records import InputParser, InvalidLine, Request, error_record, success_record
from batchrun.retry import Verdict, classify_response, retry_wait
from batchrun.schema import validate_reply
from batchrun.summary import Summary
from batchrun.trace import Trace
from batchrun.transport import Transport
from batchrun.workqueue import WorkQueue

__all__ = ["RunResult", "Runner"]

_DUMPS_OPTIONS = orjson.OPT_APPEND_NEWLINE
_STOP_KINDS = frozenset({ErrorKind.AUTH_ERROR, ErrorKind.INSUFFICIENT_CREDITS})
_SIM_KEY = "sk-or-v1-batchrun-simulator"


@dataclass(frozen=True)
class RunResult:
    """How a run ended: its summary, exit code and, for an early stop, why."""

    summary: Summary
    exit_code: int
    stop_kind: str | None
    message: str
    output: Path
    errors: Path


class Runner:
    """Runs one job to the end (or to an early stop) and reports how it went."""

    def __init__(
        self,
        config: JobConfig,
        *,
        api_key: str | None = None,
        on_event: EventHandler | None = None,
    ) -> None:
        self.config = config
        self.summary = Summary()
        self._api_key = api_key
        self._emit = on_event or (lambda event: None)
        self._limits = AdaptiveLimits(concurrency=config.concurrency, rpm=config.rpm, tpm=config.tpm)
        self._prices = PriceBook(config.pricing, builtin=config.builtin_prices)
        self._queue: WorkQueue[Request] = WorkQueue(readahead=2 * config.concurrency + 16)
        self._pending_results: list[bytes] = []
        self._pending_errors: list[bytes] = []
        self._wake_writer = asyncio.Event()
        self._closing = False
        self._outstanding = 0
        self._reader_done = False
        self._stop_kind: str | None = None
        self._stop_message = ""
        self._unavailable: dict[str, tuple[str, ...]] = {}  # model -> fallback models
        self._skipped_unavailable = 0
        self._spent_usd = 0.0
        self._reserved_usd = 0.0
        self._done_ids = IdSet()
        self._transport: Transport | None = None
        self._ledger: Ledger | None = None
        self._trace: Trace | None = None
        self._secret = b""
        self._key_sent = False
        self._broken = False  # the output refused a write: nothing more is written

    # -- control -------------------------------------------------------------------------

    def stop(self, kind: str = ErrorKind.INTERRUPTED, message: str = "interrupted") -> None:
        """Stop sending; requests in flight finish and are written. Safe to call twice."""
        if self._stop_kind is None:
            self._stop_kind, self._stop_message = kind, message
            dropped = self._queue.close(drop=True)
            self.summary.not_run += len(dropped)
            self._emit(Notice(f"stopping: {message}"))

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> RunResult:
        config = self.config
        # Before the simulator starts: it inherits the raised open-file limit.
        files = fit_open_files(config.concurrency)
        self._limits.cap_concurrency(files.connections)
        if files.notice:
            self._emit(Notice(files.notice))
        async with contextlib.AsyncExitStack() as stack:
            base_url, api_key = await self._endpoint(stack)
            self._secret = api_key.encode() if api_key and len(api_key) >= 8 else b""
            self._key_sent = bool(api_key)
            ledger = Ledger(config.output, fsync_interval_s=config.fsync_interval_s)
            self._ledger = ledger
            stack.callback(ledger.close)
            manifest = self._manifest()
            state = ledger.open(manifest, force=config.force)
            if config.log_path is not None:
                self._trace = Trace(config.log_path, secret=self._secret)
                stack.callback(self._trace.close)
            self._announce_repairs(state)
            self._done_ids = state.done_ids
            self.summary.already_done = len(state.done_ids)
            transport = await stack.enter_async_context(
                Transport(
                    base_url, api_key, connections=files.connections, timeout_s=config.timeout_s,
                    headers=config.headers, stream_idle_s=config.stream_idle_s,
                    env_proxy=not config.use_sim,  # a proxy cannot reach our own loopback child
                )
            )
            self._transport = transport
            # Only OpenRouter (and the simulator of it) serves /models with prices and /key.
            if config.speaks_openrouter:
                await self._load_prices(transport)
            self._check_budget_prices()
            plan = self._plan(base_url, state)
            refused = None
            if config.speaks_openrouter:
                plan, refused = await self._check_key(transport, plan)
            self._emit(plan)
            if refused is not None:
                self.stop(ErrorKind.AUTH_ERROR, refused)
            try:
                if self._stop_kind is None:  # the key check may have stopped the job already
                    await self._pipeline(state)
            finally:
                self.summary.close()
            still_failing = ledger.compact_errors(self._done_ids)
            if self._unavailable:
                ledger.write_manifest({**manifest, "unavailable_models": sorted(self._unavailable)})
        return self._result(still_failing)

    async def _endpoint(self, stack: contextlib.AsyncExitStack) -> tuple[str, str | None]:
        config = self.config
        if config.use_sim:
            from batchrun.sim import SimProcess  # the simulator is only loaded when asked for

            sim = stack.enter_context(SimProcess(_sim_args(config.sim)))
            return sim.base_url, self._api_key or _SIM_KEY
        api_key = self._api_key or api_key_from_env(config)
        if api_key is None and config.speaks_openrouter:
            raise ConfigError(
                f"no API key: set {config.api_key_env} (get a key at https://openrouter.ai/keys), "
                "or add --sim to try the job on the built-in simulator"
            )
        return config.base_url, api_key

    def _manifest(self) -> dict[str, Any]:
        config = self.config
        return {
            "format": MANIFEST_FORMAT,
            "batchrun": __version__,
            "input": {"path": str(config.input), "fingerprint": _fingerprint(config.input)},
            "model": config.model,
            "request": {
                "params": dict(config.params),
                "system": config.system,
                "template": config.template,
                "schema": config.schema,  # replies are judged by it: another one is another job
            },
        }

    def _announce_repairs(self, state: ResumeState) -> None:
        if state.repaired_bytes:
            self._emit(Notice(f"repaired the output: cut a torn last line ({state.repaired_bytes} bytes)"))
        if state.corrupt_lines:
            self._emit(Notice(f"{state.corrupt_lines} unreadable lines in the output were ignored"))
        for model in state.unavailable_models:
            if model == self.config.model:
                self._emit(Notice(f"model {model} was unavailable in the last run"))

    async def _load_prices(self, transport: Transport) -> None:
        """The provider's prices: the cached list while under a day old, else fetched and cached."""
        use_cache = not self.config.use_sim  # the simulator's port, so its API root, changes every run
        cached = read_prices(transport.root) if use_cache else None
        if cached is not None and cached.fresh():
            self._prices.load_models_payload(cached.payload, cached.source())
            return
        payload = await transport.get_json("/models")
        if payload is not None and self._prices.load_models_payload(payload, "/models"):
            if use_cache:
                write_prices(transport.root, payload)
        elif cached is not None:
            self._prices.load_models_payload(cached.payload, cached.source() + ", no fresh list")
            self._emit(Notice(f"could not fetch {transport.root}/models: using the list cached "
                              f"{age_text(cached.age_s())} ago"))

    def _check_budget_prices(self) -> None:
        config = self.config
        if config.max_cost_usd is None:
            return
        if self._prices.get(config.model) is None:
            raise ConfigError(
                f"--max-cost needs the price of {config.model}: add [pricing.\"{config.model}\"] "
                "with prompt_per_m and completion_per_m to the job file"
            )
        if "max_tokens" in config.params or "max_completion_tokens" in config.params:
            return
        # Lines may carry their own max_tokens (OpenAI batch files do): look at the first ones.
        with open_input(config.input) as stream:
            for count, (_, raw) in enumerate(iter_lines(stream)):
                if count >= 100:
                    break
                if b'"max_tokens"' not in raw and b'"max_completion_tokens"' not in raw:
                    raise ConfigError(
                        "--max-cost needs every request to have max_tokens, so that its worst case is "
                        "known: add -p max_tokens=N (or max_tokens under [params])"
                    )

    async def _check_key(self, transport: Transport, plan: Planned) -> tuple[Planned, str | None]:
        """Compare the key's remaining limit (OpenRouter's GET /key) with the budget and worst case.

        Returns the plan and, for a key that /key refuses, why: the job then stops before any
        chat request is sent.
        """
        status, payload = await transport.get("/key")
        if status == 401:
            message = classify_response(401, {}, orjson.dumps(payload)).message if payload else "HTTP 401"
            return plan, self._stop_hint(ErrorKind.AUTH_ERROR, self._redact_text(message))
        if status != 200:
            return plan, None
        data = payload.get("data") if isinstance(payload, dict) else None
        remaining = data.get("limit_remaining") if isinstance(data, dict) else None
        if not isinstance(remaining, (int, float)) or isinstance(remaining, bool):
            return plan, None
        budget = self.config.max_cost_usd
        if budget is not None and budget > remaining:
            raise ConfigError(
                f"--max-cost ${budget:g} is more than this key can still spend (${remaining:.4f}): "
                "lower --max-cost or raise the key's limit on openrouter.ai"
            )
        if plan.worst_case_usd is not None and plan.worst_case_usd > remaining:
            text = plan.text + f" | key has ${remaining:.4f} left, below the worst case"
            return replace(plan, text=text), None
        return plan, None

    def _plan(self, base_url: str, state: ResumeState) -> Planned:
        config = self.config
        size = measure(config.input)
        lines = size.lines if config.limit is None else min(size.lines, config.limit)
        approx = "" if size.exact else "~"
        parts = [
            f"{approx}{lines:,} lines from {config.input.name}",
            f"→ {config.output.name}",
        ]
        if state.done_ids:
            parts.append(f"({len(state.done_ids):,} already done)")
        text = " ".join(parts) + f" | {'simulator ' if config.use_sim else ''}{base_url} | model {config.model}"
        max_tokens = config.params.get("max_tokens", config.params.get("max_completion_tokens"))
        price = self._prices.get(config.model)
        worst: float | None = None
        if price is not None and isinstance(max_tokens, int) and size.lines:
            todo = max(lines - len(state.done_ids), 0)
            prompt_tokens = size.text_bytes / max(size.lines, 1) / 4 + 16
            worst = todo * price.cost(round(prompt_tokens), max_tokens)
            text += f" | worst case ~${worst:.4f} (price from {self._prices.source(config.model)})"
        elif price is None:
            text += " | cost: no price known"
        else:
            text += " | worst case unknown (no max_tokens)"
        return Planned(text, lines, not size.exact, len(state.done_ids), worst)

    async def _pipeline(self, state: ResumeState) -> None:
        kept = [] if self.config.retry_failed else [
            custom_id for custom_id, kind in state.failed.items() if kind in PER_LINE_VERDICTS
        ]
        skip_ids = state.done_ids
        if kept:
            skip_ids = skip_ids.copy()
            for custom_id in kept:
                skip_ids.add(custom_id)
        writer = asyncio.ensure_future(self._writer())
        tasks = [asyncio.ensure_future(self._reader(skip_ids))]
        tasks += [asyncio.ensure_future(self._worker()) for _ in range(self.config.concurrency)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            self._closing = True
            self._wake_writer.set()
            await writer

    # -- reader --------------------------------------------------------------------------

    async def _reader(self, skip_ids: IdSet) -> None:
        config = self.config
        parser = InputParser(
            model=config.model, params=config.params, system=config.system,
            template=config.template, skip_ids=skip_ids,
            budget_set=config.max_cost_usd is not None, keep_fields=config.keep_fields,
            schema=config.schema, ask_stream_usage=not config.speaks_openrouter,  # OpenRouter always sends it
        )
        read = 0
        with open_input(config.input) as stream:
            for line, raw in iter_lines(stream):
                if self._stop_kind is not None or (config.limit is not None and read >= config.limit):
                    break
                read += 1
                if not read & 1023:
                    await asyncio.sleep(0)  # let the workers and the writer run during long skips
                item = parser.parse(raw, line)
                if item is None:
                    continue
                if isinstance(item, InvalidLine):
                    self._finish_invalid(item)
                elif item.model in self._unavailable:
                    self._skipped_unavailable += 1
                else:
                    self._outstanding += 1
                    await self._queue.put(item)
        self._reader_done = True
        self._close_if_done()

    def _finish_invalid(self, item: InvalidLine) -> None:
        record = error_record(
            item.custom_id, item.line, ErrorKind.INVALID_INPUT, item.message, metadata=item.metadata
        )
        self._write_error(record)
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
        transport = self._transport
        assert transport is not None
        status: int | None = None
        raw = b""
        ttft_s: float | None = None
        await limits.gate.acquire()
        try:
            wait = limits.reserve(item.est_tokens)
            if wait > 0:
                await asyncio.sleep(wait)
            if self._stop_kind is not None or item.model in self._unavailable:
                limits.settle(item.est_tokens, 0)
                self._leave_unfinished(item)
                return
            if self.config.max_cost_usd is not None and not self._reserve_budget(item):
                return
            # Records finished before this send are written first, so that what a kill can lose
            # (sent but unwritten) never exceeds the requests in flight: at most --concurrency.
            if self._pending_results or self._pending_errors:
                self._flush()
            item.attempts += 1
            started = time.perf_counter()
            try:
                status, headers, raw, ttft_s = await transport.post(item.body)
                verdict = classify_response(
                    status, headers, raw, schema_required=item.schema_required, now=time.time()
                )
            except TransportFailure as failure:
                verdict = Verdict(failure.kind, failure.message)
                if failure.stops_job:
                    self.stop(failure.kind, failure.message)
            latency = time.perf_counter() - started
        finally:
            limits.gate.release()
        self._settle(item, status, raw, verdict, latency, ttft_s)

    def _reserve_budget(self, item: Request) -> bool:
        limit = self.config.max_cost_usd
        assert limit is not None
        # Any model of the line's fallback list may serve it, so the dearest one is booked.
        models = (item.model, *item.models)
        prices = [self._prices.get(model) for model in models]
        if None in prices:
            unknown = models[prices.index(None)]
            self.stop(ErrorKind.BUDGET_EXCEEDED, f"no price known for {unknown}, so --max-cost cannot be kept")
            self._leave_unfinished(item)
            return False
        # An upper bound, not an estimate: no tokenizer makes more tokens than the body has bytes.
        worst = max(price.cost(len(item.body), item.max_tokens or 0) for price in prices if price)
        if self._spent_usd + self._reserved_usd + worst > limit:
            self.stop(
                ErrorKind.BUDGET_EXCEEDED,
                f"budget reached: ${self._spent_usd:.4f} spent of ${limit:g}, and the next request could "
                f"cost up to ${worst:.6f}; raise --max-cost and run again to resume",
            )
            self._leave_unfinished(item)
            return False
        self._reserved_usd += worst
        item.reserved_usd = worst
        return True

    def _settle(
        self, item: Request, status: int | None, raw: bytes, verdict: Verdict, latency: float,
        ttft_s: float | None = None,
    ) -> None:
        body = verdict.body
        raw_usage = usage_of(body)
        usage = None
        if raw_usage is not None:
            model = body.get("model") if isinstance(body.get("model"), str) else item.model
            usage = response_cost(raw_usage, model, self._prices)
            cost = usage["cost_usd"] or 0.0
            item.billed_usd += cost
            self._spent_usd += cost
            self._limits.settle(item.est_tokens, usage["total_tokens"])
        elif status is None:
            # No answer (timeout, reset): it may have been billed in full, so the budget counts
            # the whole reservation as spent and the rate limiter keeps its tokens.
            self._spent_usd += item.reserved_usd
        else:
            # A reply without usage (some servers' streams) is taken to have used what was booked.
            self._limits.settle(item.est_tokens, item.est_tokens if verdict.kind is None else 0)
        if item.reserved_usd:
            self._reserved_usd -= item.reserved_usd
            item.reserved_usd = 0.0

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
            usage = usage or response_cost(None, None, self._prices)
            log("done")
            raw_body = raw.strip()
            record = success_record(item, raw_body, body, usage, latency, parsed=parsed, ttft_s=ttft_s)
            self._write_result(record, raw_body)
            self._done_ids.add(item.custom_id)
            self._limits.on_success()
            self._finish(item, None)
            return
        if kind == ErrorKind.RATE_LIMITED:
            self._limits.on_rate_limited(
                verdict.retry_after, over_limit=verdict.over_limit, upstream=verdict.upstream
            )
        if kind in RETRYABLE_KINDS:
            if self._stop_kind is not None:
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
                asyncio.get_running_loop().call_later(wait, self._retry, item)
                return
        if kind == ErrorKind.MODEL_UNAVAILABLE:
            self._mark_unavailable(item.model, verdict)
        log("failed")
        record = error_record(
            item.custom_id, item.line, kind, verdict.message, status=status, body=body,
            usage=usage, request=item, latency_s=latency,
        )
        self._write_error(record)
        if kind in _STOP_KINDS:
            self.stop(kind, self._stop_hint(kind, self._redact_text(verdict.message)))
        self._finish(item, kind)

    def _retry(self, item: Request) -> None:
        if not self._queue.put_retry(item):
            self._leave_unfinished(item)

    def _mark_unavailable(self, model: str, verdict: Verdict) -> None:
        if model in self._unavailable:
            return
        self._unavailable[model] = verdict.fallback_models
        fallbacks = ", ".join(verdict.fallback_models) or "none listed"
        message = self._redact_text(verdict.message)
        self._emit(Notice(f"model {model} is not available ({message}); its lines are not sent. "
                          f"Fallback models: {fallbacks}"))

    def _stop_hint(self, kind: str, message: str) -> str:
        if kind != ErrorKind.AUTH_ERROR:
            return f"out of credits ({message}): add credits or raise the key's limit, then run again"
        key_env = self.config.api_key_env
        if self._key_sent:
            return f"the API key was refused ({message}): set {key_env} to a valid key and run again"
        if key_env == DEFAULT_KEY_ENV and not self.config.speaks_openrouter:
            return (f"the server wants a key ({message}) and none was sent: {key_env} goes to "
                    "OpenRouter only, so name this server's variable with --api-key-env (or api_key_env)")
        return f"the server wants a key ({message}) and none was sent: set {key_env} and run again"

    def _finish(self, item: Request, kind: str | None) -> None:
        self._outstanding -= 1
        self._emit(Finished(item.custom_id, kind))
        self._close_if_done()

    def _leave_unfinished(self, item: Request) -> None:
        self._outstanding -= 1
        self.summary.not_run += 1
        self._close_if_done()

    # -- writer --------------------------------------------------------------------------

    def _write_result(self, record: dict[str, Any], raw_body: bytes) -> None:
        self.summary.add(record)
        self._pending_results.append(self._redact(_dumps_line(record, raw_body)))
        self._wake_writer.set()

    def _write_error(self, record: dict[str, Any]) -> None:
        self.summary.add(record)
        self._pending_errors.append(self._redact(_dumps_line(record)))
        self._wake_writer.set()

    def _redact(self, line: bytes) -> bytes:
        # A server may echo request headers into a body; the key must never reach a file.
        secret = self._secret
        return line.replace(secret, b"[redacted]") if secret and secret in line else line

    def _redact_text(self, text: str) -> str:
        return text.replace(self._secret.decode(), "[redacted]") if self._secret else text

    def _flush(self) -> None:
        """Hand every finished record to the kernel now (a plain write; fsync is the writer's)."""
        results, errors = self._pending_results, self._pending_errors
        if not (results or errors) or self._broken:
            return
        self._pending_results, self._pending_errors = [], []
        assert self._ledger is not None
        try:
            self._ledger.write(b"".join(results), b"".join(errors))
        except JobStopped as exc:
            self._broken = True
            self.stop(exc.kind, str(exc))

    async def _writer(self) -> None:
        ledger = self._ledger
        assert ledger is not None
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            self._flush()
            if ledger.sync_due() and not self._broken:
                if self._trace is not None:
                    self._trace.flush()
                await asyncio.to_thread(ledger.sync)
            if self._closing and (self._broken or not (self._pending_results or self._pending_errors)):
                return

    # -- the end -------------------------------------------------------------------------

    def _result(self, still_failing: int) -> RunResult:
        summary = self.summary
        summary.not_run += self._skipped_unavailable
        kind, message = self._stop_kind, self._stop_message
        if kind is None and self._unavailable:
            kind = ErrorKind.MODEL_UNAVAILABLE
            names = ", ".join(sorted(self._unavailable))
            fallbacks = sorted({m for f in self._unavailable.values() for m in f})
            message = (
                f"model {names} is not available: choose another with --model"
                + (f" (the provider suggests {', '.join(fallbacks)})" if fallbacks else "")
                + f"; {summary.not_run:,} lines were not sent and a rerun sends them"
            )
        if kind == ErrorKind.INTERRUPTED:
            code = 130
        elif kind is not None:
            code = 3
        elif still_failing:
            code = 1
            message = f"{still_failing:,} ids failed: see {self.config.errors_path.name}"
        else:
            code = 0
        return RunResult(summary, code, kind, message, self.config.output, self.config.errors_path)


def _dumps_line(record: dict[str, Any], raw_body: bytes | None = None) -> bytes:
    try:
        return orjson.dumps(record, option=_DUMPS_OPTIONS, default=str)
    except TypeError:
        # Integers beyond 64 bits (in metadata) that orjson refuses: the standard library writes
        # them exactly, with the embedded provider body parsed back from its bytes.
        response = record.get("response")
        if isinstance(response, dict) and isinstance(response.get("body"), orjson.Fragment):
            body = json.loads(raw_body) if raw_body else None
            record = {**record, "response": {**response, "body": body}}
        return (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode()


def _fingerprint(path: Path) -> str:
    with readable(path):
        return fingerprint(path)


def _sim_args(options: dict[str, Any] | Any) -> list[str]:
    """Job-file ``[sim]`` options as ``python -m batchrun.sim`` flags."""
    args: list[str] = []
    for key, value in dict(options).items():
        flag = "--" + key.replace("_", "-")
        values: Iterable[Any] = value if isinstance(value, list) else [value]
        if key == "faults" and isinstance(value, dict):
            values = [f"{k}={v}" for k, v in value.items()]
            flag = "--fault"
        for v in values:
            if isinstance(v, bool):  # a switch such as no_cost = true
                args += [flag] if v else []
            else:
                args += [flag, str(v)]
    return args
