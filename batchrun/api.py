"""The Python API, and the one entry point the CLI runs jobs through: ``run`` / ``run_async``.

No terminal output: progress goes to ``on_event`` (batchrun.events). The API key comes from
``api_key=`` or the environment variable the job names. ``run`` owns the event loop of a job: it
uses uvloop where installed, makes a file-size limit surface as a write error (a clean stop,
exit 3) instead of killing the process, and, in the main thread, handles SIGINT and SIGTERM: the
first drains requests in flight and ends the run with 130 (143), a second quits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable, Coroutine
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar, Union

from batchrun.config import JobConfig, load_config
from batchrun.errors import ConfigError, ErrorKind
from batchrun.events import EventHandler, Notice
from batchrun.runner import JobRunner, RunResult, runner_for

__all__ = ["run", "run_async"]

Target = Union[str, Path, JobConfig]
_OPTIONS = frozenset(f.name for f in fields(JobConfig)) - {"input"}
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
T = TypeVar("T")


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
            raise ConfigError(f"bad setting: {exc}") from exc
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
    return await runner_for(config, api_key=api_key, on_event=on_event).run()


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
    In the main thread, the first SIGINT (Ctrl-C) or SIGTERM stops the job the graceful way
    (requests in flight finish and are saved; exit code 130 or 143; a rerun resumes) and a second
    one ends the process at once. Inside a running event loop (a notebook), the job runs on its
    own loop in a worker thread and ``on_event`` is called from that thread; Ctrl-C
    (KeyboardInterrupt) stops it the graceful way.
    """
    config = _config(input_or_job, options)
    runner = runner_for(config, api_key=api_key, on_event=on_event)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_here(runner, on_event)
    return _run_in_thread(runner)


def _loop_runner() -> Callable[[Coroutine[Any, Any, T]], T]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def _run_here(runner: JobRunner, on_event: EventHandler | None) -> RunResult:
    """Run on a loop of our own in this thread, signals handled when it is the main thread."""
    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        # A file-size limit must surface as a write error (a clean stop), not kill the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    received: list[int] = []

    async def main() -> RunResult:
        with _signals_stop(runner, received, on_event):
            return await runner.run()

    result = _loop_runner()(main())
    if received and result.exit_code == 130:
        result = replace(result, exit_code=128 + received[0])
    return result


@contextlib.contextmanager
def _signals_stop(runner: JobRunner, received: list[int], on_event: EventHandler | None) -> Any:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) > 1:
            if on_event is not None:
                on_event(Notice("second interrupt: quitting now (a rerun repairs and resumes)",
                                important=True))
            os._exit(128 + signum)
        runner.stop(ErrorKind.INTERRUPTED,
                    f"{name}: finishing requests in flight (interrupt again to quit at once)")

    for signum in _SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        yield
    finally:
        for signum in _SIGNALS:
            loop.remove_signal_handler(signum)


def _run_in_thread(runner: JobRunner) -> RunResult:
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
    result: RunResult = outcome["result"]
    return result
