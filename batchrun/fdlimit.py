"""Open files for thousands of connections: fit the soft ``RLIMIT_NOFILE`` to ``--concurrency``.

Every connection is a file descriptor, and shells commonly start programs with a soft limit of
1,024 open files while the hard limit is far higher (measured: ``--concurrency 5000`` died with
"Too many open files" after about 11,000 requests). Any process may raise its soft limit up to the
hard one, so a run does that at start; when even the hard limit is too low it runs with fewer
connections and says how to raise the limit. ``plan`` is the pure decision (table-tested);
``fit_open_files`` reads and sets the limit. Without the ``resource`` module (Windows) it does
nothing: there the C runtime's limits are not the sockets'.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

__all__ = ["MARGIN", "FilePlan", "fit_open_files", "is_too_many_files", "needed", "plan",
           "too_many_files_hint"]

# Descriptors a run holds besides its connections: stdin/out/err, the input, the results,
# errors, lock and manifest files, the --log file, the temp file of an atomic rewrite, the
# price cache, the event loop's epoll and wake-up pipe, the pipes to a --sim child, plus
# transient ones (a DNS lookup's socket, a lazily imported module, a connection closing while
# its replacement opens). About 20 are open at once; 64 leaves room to spare. The --sim child
# inherits the limit and needs the same: its own table holds the server side of each connection.
MARGIN = 64


@dataclass(frozen=True, slots=True)
class FilePlan:
    """What to do at start: the soft limit to set (None: leave it), the connections, a notice."""

    soft: int | None
    connections: int
    notice: str | None = None


def needed(concurrency: int) -> int:
    """Open files a run at ``concurrency`` needs: one per connection plus ``MARGIN``."""
    return concurrency + MARGIN


def plan(concurrency: int, soft: int | None, hard: int | None) -> FilePlan:
    """Decide the soft limit and the connections; ``None`` stands for an unlimited limit."""
    need = needed(concurrency)
    if soft is None or soft >= need:
        return FilePlan(None, concurrency)
    if hard is None or hard >= need:
        return FilePlan(need, concurrency)
    connections = max(1, hard - MARGIN)
    notice = (
        f"--concurrency {concurrency:,} needs about {need:,} open files, but the limit here is "
        f"{hard:,} (ulimit -n): running {connections:,} connections at once. For all "
        f"{concurrency:,}, raise it before the run with `ulimit -n {need}` (the hard limit, "
        "shown by `ulimit -Hn`, only root or /etc/security/limits.conf can raise)"
    )
    return FilePlan(hard if soft < hard else None, connections, notice)


def fit_open_files(concurrency: int) -> FilePlan:
    """Raise the soft open-file limit for ``concurrency`` connections, or say why it cannot.

    Only ever raises it, and only for this process and the children it starts afterwards.
    """
    try:
        import resource
    except ImportError:  # Windows
        return FilePlan(None, concurrency)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    decision = plan(concurrency, None if soft == infinite else soft, None if hard == infinite else hard)
    if decision.soft is None:
        return decision
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (decision.soft, hard))
    except (ValueError, OSError):
        # macOS reports an unlimited hard limit but refuses a soft one past kern.maxfilesperproc:
        # plan again as if the current soft limit were the hard one.
        return plan(concurrency, soft, soft)
    return decision


def is_too_many_files(exc: BaseException) -> bool:
    """Whether ``exc`` is the process (EMFILE) or the system (ENFILE) running out of open files."""
    return isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE)


def too_many_files_hint(exc: OSError) -> str:
    """How to fix an EMFILE/ENFILE, after what it stopped."""
    if exc.errno == errno.ENFILE:
        return ("the system has no open files left (ENFILE): close other programs or raise "
                "fs.file-max, or lower --concurrency, then run again to resume")
    return ("too many open files (EMFILE): raise the limit with `ulimit -n N` or lower "
            "--concurrency, then run again to resume")
