"""The three clients under test, as command lines, plus running one against the server."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from bench.measure import ClientRun, Server, run_client

__all__ = ["BATCHRUN", "OPENAI", "RAW", "argv_for", "openai_missing", "run_named"]

RAW = "raw aiohttp"
OPENAI = "openai SDK"
BATCHRUN = "batchrun"


def openai_missing() -> str | None:
    """Why the openai SDK loop cannot run (None when it can)."""
    if importlib.util.find_spec("openai") is None:
        return "openai is not installed (pip install -e '.[bench]')"
    return None


def _batchrun_command() -> list[str]:
    script = Path(sys.executable).with_name("batchrun")
    if script.exists():
        return [str(script)]
    found = shutil.which("batchrun")
    return [found] if found else [sys.executable, "-m", "batchrun"]


def argv_for(
    client: str, source: Path, output: Path, url: str, concurrency: int, extra: list[str]
) -> list[str]:
    """The command line that runs ``client`` over ``source`` into ``output``."""
    if client == RAW:
        chat = f"{url}/v1/chat/completions"
        return [sys.executable, "-m", "bench.raw_client", str(source), str(output), chat,
                str(concurrency)]
    if client == OPENAI:
        return [sys.executable, "-m", "bench.openai_client", str(source), str(output),
                f"{url}/v1", str(concurrency)]
    if client == BATCHRUN:
        return [*_batchrun_command(), "run", str(source), "-o", str(output),
                "--base-url", f"{url}/v1", "--concurrency", str(concurrency), "--no-progress",
                *(extra or ["--max-attempts", "1"])]
    raise ValueError(f"unknown client {client!r}")


def run_named(
    client: str,
    server: Server,
    source: Path,
    output: Path,
    *,
    lines: int,
    concurrency: int,
    extra: list[str] | None = None,
    stop_after_first: bool = False,
    label: str | None = None,
    nofile: int | None = None,
    **server_options: float | None,
) -> ClientRun:
    """Reset the server with ``server_options`` and measure one run of ``client``.

    ``nofile`` starts the client under that soft open-file limit (as ``ulimit -n`` would).
    """
    server.reset(**server_options)
    argv = argv_for(client, source, output, server.url, concurrency, extra or [])
    return run_client(
        label or client, argv, lines=lines, server=server, workdir=output.parent,
        output=output, stop_after_first=stop_after_first, nofile=nofile,
    )
