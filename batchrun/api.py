"""The Python API: ``run(...)`` and ``await run_async(...)`` with the job file's options.

No terminal output: progress goes to ``on_event`` (the runner's events, batchrun.events). The
API key comes from ``api_key=`` or the environment variable the job names.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Union

from batchrun.config import JobConfig, load_config
from batchrun.errors import ConfigError
from batchrun.events import EventHandler
from batchrun.runner import Runner, RunResult

__all__ = ["make_runner", "run", "run_async"]

Target = Union[str, Path, JobConfig]
_OPTIONS = frozenset(f.name for f in fields(JobConfig)) - {"input"}


def make_runner(
    config: JobConfig, *, api_key: str | None = None, on_event: EventHandler | None = None
) -> Runner:
    """The runner for this job: one process, or shards on a Ray cluster (Ray imported only then)."""
    if config.ray_address is not None:
        from batchrun.ray.driver import RayDriver

        return RayDriver(config, api_key=api_key, on_event=on_event)
    return Runner(config, api_key=api_key, on_event=on_event)


def _config(target: Target, options: dict[str, Any]) -> JobConfig:
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r} (known: {', '.join(sorted(_OPTIONS))})"
        )
    if isinstance(target, JobConfig):
        if "params" in options:
            options = {**options, "params": {**target.params, **options["params"]}}
        if "output" in options:
            options["output"] = Path(options["output"]).absolute()
        try:
            return replace(target, **options)
        except TypeError as exc:
            raise ConfigError(f"bad setting: {exc}") from None
    return load_config(Path(target), options)


async def run_async(
    input_or_job: Target,
    *,
    on_event: EventHandler | None = None,
    api_key: str | None = None,
    **options: Any,
) -> RunResult:
    """Run a job (a ``.toml`` job file, an input file or a JobConfig) to its end; see ``run``."""
    config = _config(input_or_job, options)
    return await make_runner(config, api_key=api_key, on_event=on_event).run()


def run(
    input_or_job: Target,
    *,
    on_event: EventHandler | None = None,
    api_key: str | None = None,
    **options: Any,
) -> RunResult:
    """Run a job to its end and return how it went (summary, exit code, output paths).

    ``options`` are JobConfig fields and override the job file's: ``model``, ``output``,
    ``base_url`` (``"sim"`` for the built-in simulator), ``params`` (merged over the job's),
    ``concurrency``, ``rpm``, ``tpm``, ``max_cost_usd``, ``limit``, ``template``, ``system``...
    Inside a running event loop (a notebook), the job runs on its own loop in a worker thread
    and ``on_event`` is called from that thread; Ctrl-C (KeyboardInterrupt) stops it the way the
    CLI's first Ctrl-C does: requests in flight finish and are saved, a rerun resumes.
    """
    config = _config(input_or_job, options)
    runner = make_runner(config, api_key=api_key, on_event=on_event)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(runner.run())
    return _run_in_thread(runner)


def _run_in_thread(runner: Runner) -> RunResult:
    outcome: dict[str, Any] = {}
    started = threading.Event()

    def work() -> None:
        loop = asyncio.new_event_loop()
        outcome["loop"] = loop
        started.set()
        try:
            outcome["result"] = loop.run_until_complete(runner.run())
        except BaseException as exc:  # handed to the calling thread below
            outcome["error"] = exc
        finally:
            loop.close()

    thread = threading.Thread(target=work, name="batchrun", daemon=True)
    thread.start()
    started.wait()
    try:
        while thread.is_alive():
            thread.join(0.1)
    except KeyboardInterrupt:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to stop
            outcome["loop"].call_soon_threadsafe(runner.stop)
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
