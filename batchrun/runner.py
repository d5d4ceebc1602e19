"""Run one job to its end: preflight, then the pipeline of its mode, then the result.

This module composes the engine's pieces (``batchrun.engine``) and turns how a run ended into a
``RunResult``: the summary, the exit code (docs/design.md §5: 0, 1, 3, 130/143) and the one line that
says why. It holds no policy of its own beyond that mapping.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from batchrun.config import JobConfig
from batchrun.engine.pipeline import Pipeline
from batchrun.engine.preflight import Preflight, preflight
from batchrun.engine.writer import Writer
from batchrun.errors import PER_LINE_VERDICTS, ConfigError, ErrorKind
from batchrun.events import EventHandler, Notice
from batchrun.fdlimit import fit_open_files
from batchrun.limits import AdaptiveLimits
from batchrun.summary import Summary

__all__ = ["JobRunner", "RunResult", "Runner", "runner_for"]


@dataclass(frozen=True)
class RunResult:
    """How a run ended: its summary, exit code and, for an early stop, why."""

    summary: Summary
    exit_code: int
    stop_kind: str | None
    message: str
    output: Path
    errors: Path


class JobRunner(Protocol):
    """What every mode's runner offers: run the job to its end, stop it early, its summary."""

    summary: Summary

    async def run(self) -> RunResult: ...

    def stop(self, kind: str = ErrorKind.INTERRUPTED, message: str = "interrupted") -> None: ...


def runner_for(
    config: JobConfig, *, api_key: str | None = None, on_event: EventHandler | None = None
) -> JobRunner:
    """The runner of the job's mode: sync (requests one by one), batch (the Batch API), or sync
    spread over a Ray cluster (``ray_address``; Ray is imported only then)."""
    if config.mode == "batch":
        from batchrun.batch.runner import BatchRunner  # loaded only for batch mode

        return BatchRunner(config, api_key=api_key, on_event=on_event)
    from batchrun.batch.journal import open_submissions

    waiting = open_submissions(config.output)
    if waiting:
        # Their lines would be sent again, and paid for twice, while those batches may complete.
        raise ConfigError(
            f"{len(waiting)} batch(es) of {config.output.name} from --mode batch may still complete: "
            "run the job with --mode batch to collect them first"
        )
    if config.ray_address is not None:
        from batchrun.ray.driver import RayDriver

        return RayDriver(config, api_key=api_key, on_event=on_event)
    return Runner(config, api_key=api_key, on_event=on_event)


class Runner:
    """Runs one sync job to the end (or to an early stop) and reports how it went.

    A mode that runs the same job another way (``ray.driver.RayDriver``) overrides only
    ``_pipeline_for``: everything before and after the pipeline is this one ``run``.
    """

    mode = "sync"

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
        self._pipeline: Pipeline | None = None
        self._early_stop: tuple[str, str] | None = None

    def stop(self, kind: str = ErrorKind.INTERRUPTED, message: str = "interrupted") -> None:
        """Stop sending; requests in flight finish and are written. Safe to call twice, any time."""
        if self._pipeline is not None:
            self._pipeline.stop(kind, message)
        elif self._early_stop is None:
            self._early_stop = (kind, message)

    async def run(self) -> RunResult:
        config = self.config
        # Before the simulator starts: it inherits the raised open-file limit.
        files = fit_open_files(config.concurrency)
        if files.notice:
            self._emit(Notice(files.notice, important=True))
        async with contextlib.AsyncExitStack() as stack:
            pre = await preflight(
                config, stack, api_key=self._api_key, emit=self._emit, connections=files.connections
            )
            summary = self.summary
            summary.already_done = len(pre.state.done_ids)
            summary.kept_failed = pre.kept_failures()
            pipeline = await self._pipeline_for(pre, stack, connections=files.connections)
            self._emit(pre.plan)
            self._pipeline = pipeline
            if pre.refused is not None:
                pipeline.stop(ErrorKind.AUTH_ERROR, pre.refused)
            elif self._early_stop is not None:
                pipeline.stop(*self._early_stop)
            try:
                if pipeline.stop_kind is None:
                    await pipeline.run()
            finally:
                summary.close()
            still_failing = pre.ledger.compact_errors(pre.state.done_ids)
            pre.ledger.record_run(pre.manifest, pre.state, wall_s=summary.wall_s or 0.0,
                                  mode=self.mode, unavailable=pipeline.unavailable)
        return self._result(pre, pipeline, still_failing)

    async def _pipeline_for(
        self, pre: Preflight, stack: contextlib.AsyncExitStack, *, connections: int
    ) -> Pipeline:
        """The pipeline of this mode (it may add to ``pre.plan``, which is shown after it)."""
        config = pre.config
        limits = AdaptiveLimits(concurrency=config.concurrency, rpm=config.rpm, tpm=config.tpm)
        limits.cap_concurrency(connections)
        writer = Writer(pre.ledger, pre.redactor, self.summary)
        return Pipeline(
            pre, summary=self.summary, limits=limits, budget=pre.budget, writer=writer, emit=self._emit
        )

    def _result(self, pre: Preflight, pipeline: Pipeline, still_failing: int) -> RunResult:
        summary = self.summary
        summary.not_run += pipeline.skipped_unavailable
        plan = pre.plan
        if not plan.total_is_estimate:
            # Every input line is accounted for: done before, kept as failed, finished now, or not
            # run (what a stop left, read or not).
            unaccounted = plan.total_lines - summary.already_done - summary.kept_failed \
                - summary.finished
            summary.not_run = max(unaccounted, 0)
        kind, message = pipeline.stop_kind, pipeline.stop_message
        if kind is None and pipeline.unavailable:
            names = ", ".join(sorted(pipeline.unavailable))
            fallbacks = sorted({m for f in pipeline.unavailable.values() for m in f})
            suggest = f" (the provider suggests {', '.join(fallbacks)})" if fallbacks else ""
            failed = summary.failed.get(ErrorKind.MODEL_UNAVAILABLE, 0)
            if pipeline.skipped_unavailable or summary.not_run:
                # Lines were left unsent because their model is gone: a stop, resumable.
                kind = ErrorKind.MODEL_UNAVAILABLE
                message = (
                    f"model {names} is not available: choose another with --model (model=){suggest}; "
                    f"{summary.not_run:,} {_lines(summary.not_run)} were not sent and a rerun "
                    "sends them"
                )
            else:
                # Every line ran: some failed because their model is gone (exit 1, not a stop).
                message = (
                    f"model {names} is not available{suggest}: {failed:,} {_lines(failed)} "
                    f"failed with model_unavailable; see {self.config.errors_path.name}"
                )
        if kind == ErrorKind.INTERRUPTED:
            code = 130
        elif kind is not None:
            code = 3
        elif still_failing:
            code = 1
            if not message:
                message = self._failed_message(pre, still_failing)
        else:
            code = 0
        return RunResult(summary, code, kind, message, self.config.output, self.config.errors_path)

    def _failed_message(self, pre: Preflight, still_failing: int) -> str:
        text = f"{still_failing:,} {'id' if still_failing == 1 else 'ids'} failed: see " \
            f"{self.config.errors_path.name}"
        failed = self.summary.failed
        verdicts = sum(n for kind, n in failed.items() if kind in PER_LINE_VERDICTS) + \
            self.summary.kept_failed
        if verdicts and not self.config.retry_failed:
            text += "; per-line verdicts (invalid_request, content_filtered, invalid_output) are " \
                "retried only with --retry-failed (retry_failed=True)"
        if sum(failed.values()) > sum(n for k, n in failed.items() if k in PER_LINE_VERDICTS):
            text += "; a rerun retries the others"
        return text


def _lines(count: int) -> str:
    return "line" if count == 1 else "lines"
