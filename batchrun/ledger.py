"""The output files as a checkpoint: lock, manifest, torn-tail repair, resume scan, appends.

Durability policy: every finished record is handed to the kernel (``os.write`` on an
``O_APPEND`` descriptor) as soon as the writer task sees it, so a killed process loses nothing it
finished; ``fsync`` runs at most once per ``fsync_interval_s`` (default 1 s) and at the end, so a
power loss can lose up to that last interval (those ids are simply run again). A crash can leave at
most a torn last line, which the next open cuts off. The results file is only ever appended to;
the errors file is compacted at the end of a run to one line per id still failing, atomically
(temp file, fsync, rename).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchrun.config import output_paths
from batchrun.errors import ConfigError, ErrorKind, JobStopped, OutputLocked, ResumeMismatch
from batchrun.fdlimit import is_too_many_files, too_many_files_hint
from batchrun.idset import IdSet

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, documented
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MANIFEST_FORMAT", "Ledger", "ResumeState", "final_records", "last_error_lines", "read_manifest",
    "read_records", "repair_tail", "result_ids", "run_active",
]

MANIFEST_FORMAT = 1
_CHUNK = 1 << 20


@dataclass
class ResumeState:
    """What the output already holds when a run starts."""

    done_ids: IdSet = field(default_factory=IdSet)
    failed: dict[str, str] = field(default_factory=dict)  # custom_id -> error kind (last record)
    # custom_id -> what its attempts in earlier runs billed, for ids with no result yet: a later
    # record of the id carries it on, so billed_usd always adds up every attempt of an id.
    billed: dict[str, float] = field(default_factory=dict)
    repaired_bytes: int = 0
    corrupt_lines: int = 0
    unavailable_models: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)  # earlier runs: when each ended, its wall


def read_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed record) for each complete, valid line; skip a torn tail."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after the not-found case
    except FileNotFoundError:
        return
    with f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                return  # a torn last line: not a record
            try:
                yield number, orjson.loads(line)
            except orjson.JSONDecodeError:
                yield number, None


def last_error_lines(path: Path, done_ids: Container[str]) -> tuple[dict[str, int], int]:
    """The line number of each id's last error record, for ids with no result; and the line count.

    An errors file can hold several lines for one id until it is compacted (a run appends as it
    goes); the last one is the id's current verdict.
    """
    last: dict[str, int] = {}
    total = 0
    for number, record in read_records(path):
        total += 1
        custom_id = record.get("custom_id") if isinstance(record, dict) else None
        if isinstance(custom_id, str) and custom_id not in done_ids:
            last[custom_id] = number
    return last, total


def repair_tail(path: Path) -> int:
    """Cut a torn last line (one with no line end) off ``path``; return the bytes removed."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "r+b") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        position = size
        while position > 0:
            step = min(_CHUNK, position)
            f.seek(position - step)
            chunk = f.read(step)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = position - step + newline + 1
                break
            position -= step
        else:
            keep = 0
        f.truncate(keep)
        os.fsync(f.fileno())
        return size - keep


@contextlib.contextmanager
def _writable(path: Path) -> Iterator[None]:
    """Turn the OS's refusal to open or write an output file into one clear ConfigError."""
    try:
        yield
    except OSError as exc:
        if is_too_many_files(exc):
            raise ConfigError(f"cannot open the output {path}: {too_many_files_hint(exc)}") from exc
        raise ConfigError(
            f"cannot write the output {path}: {exc.strerror or exc} "
            "(make it writable, or choose another output with -o)"
        ) from exc


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        if is_too_many_files(exc):  # the results are safe; the rewrite waits for the next run
            raise JobStopped(
                f"cannot rewrite {path}: {too_many_files_hint(exc)}", ErrorKind.OUTPUT_ERROR
            ) from exc
        raise
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Ledger:
    """The results and errors files of one output, held under a lock while a run writes them."""

    def __init__(self, output: Path, *, fsync_interval_s: float = 1.0) -> None:
        self.paths = output_paths(output)
        self._fsync_interval = fsync_interval_s
        self._lock_fd: int | None = None
        self._results_fd: int | None = None
        self._errors_fd: int | None = None
        self._last_sync = time.monotonic()
        self._dirty = False

    # -- opening -------------------------------------------------------------------------

    def open(self, manifest: dict[str, Any], *, force: bool = False) -> ResumeState:
        """Lock the output, check it belongs to this job, repair it and read what is done."""
        folder = self.paths["results"].parent
        for key in ("results", "errors"):
            if self.paths[key].is_dir():
                raise ConfigError(f"the output {self.paths[key]} is a folder: give a file name with -o")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the output folder {folder}: {exc.strerror or exc}") from exc
        self._lock()
        try:
            state = ResumeState()
            with _writable(self.paths["manifest"]):
                state.unavailable_models, state.runs = self._check_manifest(manifest, force)
            for key in ("results", "errors"):
                with _writable(self.paths[key]):
                    state.repaired_bytes += repair_tail(self.paths[key])
            self._scan(state)
            self._results_fd = self._open_append(self.paths["results"])
            self._errors_fd = self._open_append(self.paths["errors"])
        except OSError as exc:
            self.close()
            if is_too_many_files(exc):  # nothing was sent yet: a setting to fix, not a traceback
                raise ConfigError(f"cannot open the output {self.paths['results']}: "
                                  f"{too_many_files_hint(exc)}") from exc
            raise
        except BaseException:
            self.close()
            raise
        return state

    def _open_append(self, path: Path) -> int:
        with _writable(path):
            return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _lock(self) -> None:
        path = self.paths["lock"]
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if is_too_many_files(exc):
                raise ConfigError(f"cannot open {path}: {too_many_files_hint(exc)}") from exc
            raise ConfigError(f"cannot write in the output folder {path.parent}: {exc.strerror or exc}") from exc
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise OutputLocked(
                        f"another batchrun run (pid {holder}) is writing {self.paths['results']}; "
                        "wait for it or choose another output (-o, output=)"
                    ) from exc
                raise
        # The kernel drops a flock when its holder dies, so a killed run never leaves this stuck.
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _check_manifest(
        self, manifest: dict[str, Any], force: bool
    ) -> tuple[list[str], list[dict[str, Any]]]:
        path = self.paths["manifest"]
        old = _load_manifest(path)
        has_output = self.paths["results"].exists() and self.paths["results"].stat().st_size > 0
        unavailable: list[str] = list(old.get("unavailable_models", [])) if old else []
        runs = old.get("runs") if old else None
        past_runs = [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []
        if old and not force:
            differences = _manifest_differences(old, manifest, unavailable)
            if differences:
                raise ResumeMismatch(
                    f"{self.paths['results']} was made with a different {differences}; "
                    "use --force (force=True in the Python API) to resume into it anyway, or another "
                    "output (-o, output=)"
                )
        elif old is None and has_output and not force:
            raise ResumeMismatch(
                f"{self.paths['results']} exists but has no manifest (not made by batchrun?); "
                "use --force (force=True in the Python API) to resume into it, or another output "
                "(-o, output=)"
            )
        if old is None or force or old.get("model") != manifest.get("model"):
            self.write_manifest({**manifest, "unavailable_models": unavailable, "runs": past_runs})
        return unavailable, past_runs

    def record_run(
        self, manifest: dict[str, Any], state: ResumeState, *, wall_s: float, mode: str,
        unavailable: Iterable[str] = (),
    ) -> None:
        """Note one more run in the manifest (when it ended, its wall time), keeping the last 100."""
        ended = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        runs = [*state.runs, {"ended_at": ended, "wall_s": round(wall_s, 3), "mode": mode}][-100:]
        models = sorted({*state.unavailable_models, *unavailable})
        self.write_manifest({**manifest, "unavailable_models": models, "runs": runs})

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        _write_atomic(self.paths["manifest"], orjson.dumps(manifest, option=orjson.OPT_INDENT_2))

    def _scan(self, state: ResumeState) -> None:
        state.done_ids, state.corrupt_lines = result_ids(self.paths["results"])
        for _, record in read_records(self.paths["errors"]):
            custom_id = record.get("custom_id") if isinstance(record, dict) else None
            error = record.get("error") if isinstance(record, dict) else None
            if isinstance(custom_id, str) and isinstance(error, dict):
                state.failed[custom_id] = str(error.get("code"))
                billed = record.get("billed_usd")
                if isinstance(billed, (int, float)) and billed > 0:
                    state.billed[custom_id] = float(billed)
                else:
                    state.billed.pop(custom_id, None)
        done = state.done_ids
        state.failed = {
            custom_id: kind for custom_id, kind in state.failed.items() if custom_id not in done
        }
        state.billed = {
            custom_id: usd for custom_id, usd in state.billed.items() if custom_id not in done
        }

    # -- writing -------------------------------------------------------------------------

    def write(self, results: bytes, errors: bytes) -> None:
        """Append whole lines to the files; raise JobStopped when the disk refuses them."""
        try:
            if results:
                _write_all(self._results_fd, results)
            if errors:
                _write_all(self._errors_fd, errors)
        except OSError as exc:
            raise JobStopped(
                f"cannot write the output ({exc.strerror or exc}): free some space and run again to resume",
                ErrorKind.OUTPUT_ERROR,
            ) from exc
        self._dirty = True

    def sync_due(self) -> bool:
        return self._dirty and time.monotonic() - self._last_sync >= self._fsync_interval

    def sync(self) -> None:
        """fsync both files (called from a worker thread by the runner)."""
        self._dirty = False
        self._last_sync = time.monotonic()
        for fd in (self._results_fd, self._errors_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(fd)

    # -- closing -------------------------------------------------------------------------

    def compact_errors(self, done_ids: Container[str]) -> int:
        """Rewrite the errors file to hold one line (the last) per id that has no result; count them.

        An errors file left with no line is removed: after a run where every id succeeded there is
        no errors file, as there is none before the first failure. Removing it is one unlink (the
        open append descriptor writes nothing more), so a crash leaves it either whole or gone.
        """
        path = self.paths["errors"]
        try:
            last, total = last_error_lines(path, done_ids)
            if not last:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    _fsync_dir(path.parent)
                return 0
            if len(last) == total:
                return total
            keep = set(last.values())
            with open(path, "rb") as f:
                data = b"".join(line for number, line in enumerate(f, 1) if number in keep)
        except OSError as exc:
            if is_too_many_files(exc):  # the results are safe; the next run compacts the errors
                raise JobStopped(
                    f"cannot compact {path}: {too_many_files_hint(exc)}", ErrorKind.OUTPUT_ERROR
                ) from exc
            raise
        _write_atomic(path, data)
        return len(last)

    def close(self) -> None:
        for name in ("_results_fd", "_errors_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    if name != "_lock_fd":
                        os.fsync(fd)
                    os.close(fd)
                setattr(self, name, None)


_OUR_PREFIX = b'{"id":"batch_req_'
_ID_KEY = b'"custom_id":"'


def result_ids(path: Path) -> tuple[IdSet, int]:
    """The ids a results file has a result for, and how many of its lines name none (unreadable).

    A torn last line (no line end) is not a result; ``Ledger.open`` cuts it off before scanning.
    """
    done = IdSet()
    add = done.add
    unreadable = 0
    try:
        results = open(path, "rb")  # noqa: SIM115 - closed just below
    except FileNotFoundError:
        return done, 0
    with results:
        for line in results:
            custom_id = _custom_id_of(line) if line.endswith(b"\n") else None
            if custom_id is None:
                unreadable += line.endswith(b"\n")
            else:
                add(custom_id)
    return done, unreadable


def _custom_id_of(line: bytes) -> str | None:
    """The custom_id of a results line; our own lines are read without a full JSON parse.

    Our writer puts ``id`` then ``custom_id`` first, so the id is found in the first bytes; this
    makes resuming a finished 100,000-line job cost less than parsing its output once.
    """
    if line.startswith(_OUR_PREFIX):
        start = line.find(_ID_KEY, 0, 128)
        if start > 0:
            start += len(_ID_KEY)
            end = line.find(b'"', start)
            if end > start and b"\\" not in line[start:end]:
                return line[start:end].decode("utf-8", "replace")
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    custom_id = record.get("custom_id") if isinstance(record, dict) else None
    return custom_id if isinstance(custom_id, str) else None


def _write_all(fd: int | None, data: bytes) -> None:
    assert fd is not None, "the ledger is not open"
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _manifest_differences(old: dict[str, Any], new: dict[str, Any], unavailable: list[str]) -> str:
    if old.get("format") != new.get("format"):
        return f"format version ({old.get('format')} there, {new.get('format')} now)"
    if old.get("input", {}).get("fingerprint") != new.get("input", {}).get("fingerprint"):
        return (
            f"input (made from {old.get('input', {}).get('path')}, whose content differs "
            f"from {new.get('input', {}).get('path')})"
        )
    if old.get("model") != new.get("model") and old.get("model") not in unavailable:
        return f"model ({old.get('model')} there, {new.get('model')} now)"
    old_request, new_request = old.get("request", {}), new.get("request", {})
    for key in sorted(set(old_request) | set(new_request)):
        if old_request.get(key) != new_request.get(key):
            return f"request {key} ({_short(old_request.get(key))} there, {_short(new_request.get(key))} now)"
    return ""


def _short(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 80 else text[:77] + "..."


def read_manifest(output: Path) -> dict[str, Any] | None:
    """The output's manifest (input path, model, request parameters), or None if unreadable."""
    return _load_manifest(output_paths(output)["manifest"])


def _load_manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def final_records(output: Path) -> Iterator[dict[str, Any]]:
    """Yield each id's final record: every results line, then the last errors line of ids without one.

    Memory grows with the number of ids, never with the size of the records: the errors file is read
    twice (once to find each id's last line, once to yield those lines) instead of being held.
    """
    paths = output_paths(output)
    done = IdSet()
    for _, record in read_records(paths["results"]):
        if isinstance(record, dict):
            done.add(str(record.get("custom_id")))
            yield record
    last_line, _ = last_error_lines(paths["errors"], done)
    keep = set(last_line.values())
    if keep:
        for number, record in read_records(paths["errors"]):
            if number in keep:
                yield record


def run_active(output: Path) -> bool | None:
    """Whether a run holds the output's lock now (None where flock does not exist).

    The lock file keeps the pid of the last run. If no process has that pid, no run can hold the
    lock and nothing is touched. Otherwise a shared, non-blocking flock on a fresh descriptor tells:
    it fails while a run holds its exclusive lock, and is released at once when it succeeds (a run
    starting in that instant would be told the output is busy: the window is a few microseconds).
    """
    if fcntl is None:  # pragma: no cover
        return None
    path = output_paths(output)["lock"]
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        pid_text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True
