"""Processes and their costs: the pinned bench server, and clients run as pinned children.

Each client is one child process; ``os.wait4`` gives its user+sys CPU and peak RSS. Times are
``time.monotonic()``, which on Linux is one clock for all processes, so the server's arrival
stamps and the harness's spawn and exit times can be subtracted directly.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

__all__ = ["ROOT", "ClientRun", "Server", "child_env", "count_lines", "pinned", "run_client"]

ROOT = Path(__file__).resolve().parent.parent
_TASKSET = shutil.which("taskset")
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def pinned(core: int, argv: list[str]) -> list[str]:
    """``argv`` prefixed with ``taskset -c core`` when taskset exists (else unchanged)."""
    return [_TASKSET, "-c", str(core), *argv] if _TASKSET else list(argv)


def pinning_note() -> str:
    """How processes are placed, for the report header."""
    if _TASKSET:
        return "server on core 0, each client alone on core 1 (taskset)"
    return "UNPINNED: taskset not found, server and clients share all cores"


def child_env() -> dict[str, str]:
    """The environment for clients: no proxies (loopback only), a dummy key, the repo importable."""
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["OPENROUTER_API_KEY"] = "x"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


class Server:
    """The bench server as a child pinned to core 0; reconfigured per client run via /_reset."""

    def __init__(self) -> None:
        argv = pinned(0, [sys.executable, "-m", "bench.server", "--port", "0"])
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, text=True
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line.startswith("PORT "):
            self.process.kill()
            raise RuntimeError(f"bench server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def _call(self, method: str, path: str, body: bytes | None = None) -> Any:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        with _OPENER.open(request, timeout=30) as response:
            return orjson.loads(response.read())

    def reset(self, **options: Any) -> None:
        """Zero the counters and set the options (unnamed ones back to their defaults)."""
        values = {"latency_ms": 0.0, "rate": None, "hidden_rpm": None, "upstream_429": 0.0,
                  "upstream_retry_after": 1, **options}
        self._call("POST", "/_reset", orjson.dumps(values))

    def stats(self) -> dict[str, Any]:
        """The server's counters since the last reset."""
        return self._call("GET", "/_stats")

    def close(self) -> None:
        """Stop the server process."""
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class ClientRun:
    """One client process: what it did and what it cost."""

    label: str
    lines: int
    exit_code: int
    spawned: float
    ended: float
    cpu_s: float
    maxrss_kb: int
    server: dict[str, Any]
    output_lines: int | None = None
    output_path: str | None = None
    stderr_tail: str = ""
    killed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def wall_s(self) -> float:
        """Spawn to exit."""
        return self.ended - self.spawned

    @property
    def startup_s(self) -> float | None:
        """Spawn to the first request the server saw."""
        first = self.server.get("first")
        return None if first is None else first - self.spawned

    @property
    def requests(self) -> int:
        """Chat requests the server saw (429s included)."""
        return int(self.server.get("requests", 0))

    @property
    def req_per_s(self) -> float | None:
        """Successful requests per second, from the first request seen to the client's exit."""
        first = self.server.get("first")
        ok = int(self.server.get("ok", 0))
        if first is None or self.ended <= first or not ok:
            return None
        return ok / (self.ended - first)

    @property
    def arrival_rate(self) -> float | None:
        """Requests per second as the server saw them arrive, first to last."""
        first, last = self.server.get("first"), self.server.get("last")
        if first is None or last is None or last <= first:
            return None
        return (self.requests - 1) / (last - first)

    @property
    def cpu_us_per_req(self) -> float | None:
        """Client CPU (user+sys, start-up included) per request sent."""
        return self.cpu_s * 1e6 / self.requests if self.requests else None

    @property
    def server_us_per_req(self) -> float | None:
        """The server's own CPU per request over this run."""
        return self.server["cpu_s"] * 1e6 / self.requests if self.requests else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "label": self.label, "lines": self.lines, "exit_code": self.exit_code,
            "wall_s": self.wall_s, "startup_s": self.startup_s, "req_per_s": self.req_per_s,
            "arrival_rate": self.arrival_rate, "cpu_s": self.cpu_s,
            "cpu_us_per_req": self.cpu_us_per_req, "maxrss_kb": self.maxrss_kb,
            "server_us_per_req": self.server_us_per_req, "output_lines": self.output_lines,
            "output_path": self.output_path, "exit_tail": self.stderr_tail[-300:],
            "killed": self.killed, "server": self.server, **self.extra,
        }


def count_lines(path: Path) -> int | None:
    """Newline count of a file, or None when it does not exist."""
    if not path.exists():
        return None
    count = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            count += block.count(b"\n")
    return count


def _stop_when_due(
    process: subprocess.Popen[str], pid: int, server: Server | None, stop_after_first: bool,
    timeout_s: float,
) -> bool:
    """Wait for the launcher; SIGKILL the client at the deadline or, when asked, once the server
    has seen its first request. Returns whether it was killed."""
    if not stop_after_first:
        try:
            process.wait(timeout=timeout_s)
            return False
        except subprocess.TimeoutExpired:
            os.kill(pid, signal.SIGKILL)
            process.wait()
            return True
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        if time.monotonic() > deadline or (server and server.stats()["first"] is not None):
            os.kill(pid, signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.02)
    return False


def _soft_nofile(soft: int) -> Callable[[], None]:
    def limit() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return limit


def run_client(
    label: str,
    argv: list[str],
    *,
    lines: int,
    server: Server | None,
    workdir: Path,
    output: Path | None = None,
    stop_after_first: bool = False,
    timeout_s: float = 3600.0,
    nofile: int | None = None,
) -> ClientRun:
    """Run ``argv`` pinned to core 1 through the launcher and measure it.

    The caller has reset the server. With ``stop_after_first`` the client is killed as soon as
    the server has seen a request (for start-up times on inputs too large to run through).
    ``nofile`` starts the client under that soft open-file limit (``ulimit -n``), the hard one kept.
    """
    stderr_path = workdir / "stderr.txt"
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.launch", *pinned(1, argv)],
            cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=stderr, text=True,
            preexec_fn=None if nofile is None else _soft_nofile(nofile),
        )
        assert process.stdout is not None
        pid = int(process.stdout.readline().split()[1])
        killed = _stop_when_due(process, pid, server, stop_after_first, timeout_s)
        report = orjson.loads(process.stdout.read())
    tail = stderr_path.read_text(errors="replace")[-2000:]
    return ClientRun(
        label=label, lines=lines, exit_code=report["exit_code"], spawned=report["spawned"],
        ended=report["ended"], cpu_s=report["cpu_s"], maxrss_kb=report["maxrss_kb"],
        server=server.stats() if server else {}, killed=killed, stderr_tail=tail,
        output_lines=count_lines(output) if output else None,
        output_path=str(output) if output else None,
    )
