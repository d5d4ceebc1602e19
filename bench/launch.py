"""A small launcher that runs one client and reports its exact rusage as one JSON line.

Why: Linux carries a process's peak RSS across ``exec``, so a client forked straight from the
harness would report the harness's peak as its own ``ru_maxrss``. Forked from this tiny process
instead, the client's floor is this process's few MB (below any Python client's real peak).
Usage: ``python -m bench.launch ARGV...``; prints ``PID <n>``, then the JSON when the client ends.
Only the standard library is imported, to stay small.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    """Fork, exec ``sys.argv[1:]``, wait for it and print its spawn/exit times and rusage."""
    argv = sys.argv[1:]
    spawned = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: become the client, its stdout sent to our stderr
        try:
            os.dup2(2, 1)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    print(f"PID {pid}", flush=True)
    _, status, usage = os.wait4(pid, 0)
    ended = time.monotonic()
    report = {
        "spawned": spawned, "ended": ended, "exit_code": os.waitstatus_to_exitcode(status),
        "cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_kb": usage.ru_maxrss,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
