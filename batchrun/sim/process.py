"""The simulator as a child process, so it runs on another core than the client under test."""

from __future__ import annotations

import contextlib
import os
import queue
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit

import orjson

__all__ = ["LISTENING_PREFIX", "SimProcess"]

LISTENING_PREFIX = "batchrun sim listening on "
# The directory holding the `batchrun` package, so the child imports this same source tree.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _loopback_opener() -> urllib.request.OpenerDirector:
    """Return an opener for our own child on loopback: no proxy, no certificate checks.

    A proxy from the environment cannot reach our loopback, and the child's URL came from its own
    stdout, so a (test) CA the caller may not trust adds nothing.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )


class SimProcess:
    """Run `python -m batchrun.sim --port 0 ARGS` and learn its URL from the listening line."""

    def __init__(self, args: list[str] | None = None, *, startup_timeout_s: float = 20.0) -> None:
        self.args = list(args or [])
        self.startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[Any] | None = None
        self._returncode: int | None = None
        self.base_url = ""

    def start(self) -> SimProcess:
        """Start the child and return self once it prints its listening line."""
        if self._proc is not None:
            return self
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        # Closed in stop(): the file must outlive start() to explain a crash later.
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        cmd = [sys.executable, "-m", "batchrun.sim", "--port", "0", *self.args]
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env
        )
        lines: queue.Queue[str] = queue.Queue()
        stdout = self._proc.stdout
        assert stdout is not None

        def read() -> None:
            # Keep draining stdout so the child can never block on a full pipe.
            for line in stdout:
                lines.put(line)
            lines.put("")

        threading.Thread(target=read, name="batchrun-sim-stdout", daemon=True).start()
        try:
            line = lines.get(timeout=self.startup_timeout_s)
        except queue.Empty:
            line = ""
        if not line.startswith(LISTENING_PREFIX):
            if not line:  # stdout closed: the child is exiting; let it finish writing stderr
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=5)
            detail = self._read_stderr() or repr(line)
            self.stop()
            raise RuntimeError(f"simulator did not start: {detail}")
        self.base_url = line[len(LISTENING_PREFIX) :].strip()
        return self

    def _read_stderr(self) -> str:
        if self._stderr is None:
            return ""
        with contextlib.suppress(ValueError, OSError):
            self._stderr.seek(0)
            return str(self._stderr.read()).strip()[-2000:]
        return ""

    @property
    def root_url(self) -> str:
        """Return `http(s)://HOST:PORT` without the API prefix."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    def ledger_json(self) -> dict[str, Any]:
        """Fetch GET /_sim/ledger from the child."""
        with _loopback_opener().open(f"{self.root_url}/_sim/ledger", timeout=10) as resp:
            data: dict[str, Any] = orjson.loads(resp.read())
        return data

    def stop(self) -> None:
        """Ask the child to stop (SIGTERM), then kill it if it does not within 5 s."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._returncode = proc.returncode
        if proc.stdout is not None:
            proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._proc = None

    @property
    def returncode(self) -> int | None:
        """Return the child's exit code: None while it runs or before start, kept after stop()."""
        return self._returncode if self._proc is None else self._proc.poll()

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
