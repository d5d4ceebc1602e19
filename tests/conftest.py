"""Shared fixtures: a real simulator on loopback, input files, and the CLI as a real process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrun.config import JobConfig, load_config
from batchrun.events import EventHandler
from batchrun.runner import RunResult, runner_for
from batchrun.sim import SimConfig, SimServer


@pytest.fixture(autouse=True)
def price_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own price cache (``batchrun.price_cache``), never the user's."""
    path = tmp_path / "cache"
    monkeypatch.setenv("BATCHRUN_CACHE_DIR", str(path))
    return path


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., SimServer]]:
    """Start simulators with the given SimConfig fields; all are stopped after the test."""
    started: list[SimServer] = []

    def start(**options: Any) -> SimServer:
        server = SimServer(SimConfig(**options)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def sim(sim_factory: Callable[..., SimServer]) -> SimServer:
    return sim_factory()


def run_job(
    job: Path | JobConfig,
    overrides: dict[str, Any] | None = None,
    *,
    api_key: str | None = "sk-or-test",
    on_event: EventHandler | None = None,
    **settings: Any,
) -> RunResult:
    """Run a job through the engine in this process: a job file with ``overrides`` (and/or
    ``settings``, JobConfig fields), or a config.

    The one way tests run a job without the CLI: no signal handlers, the default event loop.
    """
    config = job if isinstance(job, JobConfig) else load_config(job, {**(overrides or {}), **settings})
    return asyncio.run(runner_for(config, api_key=api_key, on_event=on_event).run())


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def prompts(n: int, *, prefix: str = "p", max_tokens: int = 8) -> list[dict[str, Any]]:
    return [
        {"custom_id": f"{prefix}{i}", "prompt": f"Say something about item {i}.", "max_tokens": max_tokens}
        for i in range(n)
    ]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
    env.update({"OPENROUTER_API_KEY": "sk-or-test", "PYTHONUNBUFFERED": "1", **extra})
    return env


def batchrun_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "batchrun", *map(str, args)]


def start_cli(*args: str | Path, output: bool = True) -> subprocess.Popen[str]:
    """Start the CLI as a real process in the background (stdout/stderr piped, or dropped)."""
    pipe = subprocess.PIPE if output else subprocess.DEVNULL
    return subprocess.Popen(batchrun_cmd(*args), env=cli_env(), stdout=pipe, stderr=pipe, text=True)


def run_cli(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        batchrun_cmd(*args), capture_output=True, text=True, timeout=timeout,
        env=env if env is not None else cli_env(),
    )


def job_file(tmp_path: Path, input_path: Path, *, output: Path | None = None, extra: str = "") -> Path:
    """A job file whose retries are scaled down so tests never wait whole seconds."""
    job = tmp_path / "job.toml"
    job.write_text(
        f'input = "{input_path}"\n'
        f'output = "{output or tmp_path / "out.jsonl"}"\n'
        f"{extra}\n"
        "[retry]\nbackoff_base_s = 0.01\nbackoff_cap_s = 0.05\n"
    )
    return job


def wait_for(condition: Callable[[], object], *, what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` seconds saying ``what`` never came.

    Tests wait for a condition (a file's lines, a lock, a ledger count), never for a fixed time:
    these machines are loaded and slow at random.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def line_count(path: Path) -> int:
    """Complete lines in a file (0 when it does not exist yet)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


class StderrWatch:
    """Reads a running process's stderr in a thread, so a test can wait for a line in it."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        self._process = process
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line)

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def text(self) -> str:
        """All of stderr, once the process has ended; closes its pipes."""
        self._process.wait(timeout=30)
        self._thread.join(timeout=10)
        for stream in (self._process.stdout, self._process.stderr):
            if stream is not None:
                stream.close()
        return "".join(self.lines)
