"""P10, sharding on Ray: the single-process run vs ``--ray`` with 1 and 2 shards, same input.

Usage: ``python -m bench.ray_shards [--lines 20000] [--latency-ms 20] [--concurrency 128]``
(needs ``pip install -e '.[ray]'``). Every run gets the same total ``--concurrency``; the Ray runs
start their own local cluster (``--ray auto``), so each pays Ray's start-up, shown apart: the plan
line's "ready in" (joining or starting the cluster and the shard actors), the time to the first
request, and the run phase (first to last request the server saw). Clients are not pinned to a
core here: shards are processes, and pinning the client would pin them all to one core.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.clients import _batchrun_command
from bench.inputs import make_input
from bench.measure import ROOT, Server, child_env

_READY = re.compile(r"ready in ([0-9.]+) s")


def _run(label: str, server: Server, source: Path, folder: Path, concurrency: int, latency_ms: float,
         extra: list[str]) -> dict[str, object]:
    server.reset(latency_ms=latency_ms)
    out = folder / label.replace(" ", "_") / "out.jsonl"
    out.parent.mkdir(parents=True)
    argv = [*_batchrun_command(), "run", str(source), "-o", str(out), "--base-url", f"{server.url}/v1",
            "-c", str(concurrency), "--no-progress", "--max-attempts", "1", *extra]
    spawned = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=1800)
    ended = time.monotonic()
    stats = server.stats()
    first, last = stats.get("first"), stats.get("last")
    ready = _READY.search(done.stderr)
    run_s = (last - first) if first is not None and last is not None else None
    return {
        "label": label, "exit": done.returncode, "wall_s": ended - spawned,
        "ray_ready_s": float(ready.group(1)) if ready else None,
        "first_request_s": None if first is None else first - spawned,
        "run_s": run_s, "requests": stats.get("requests"),
        "req_per_s": stats.get("ok", 0) / run_s if run_s else None,
        "lines_out": out.read_bytes().count(b"\n") if out.exists() else 0,
        "stderr": done.stderr[-400:] if done.returncode else "",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ray_shards", description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=128)
    args = parser.parse_args(argv)
    server = Server()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
            folder = Path(tmp)
            source = make_input(folder, args.lines)
            runs = [
                _run("single process", server, source, folder, args.concurrency, args.latency_ms, []),
                _run("ray 1 shard", server, source, folder, args.concurrency, args.latency_ms,
                     ["--ray", "auto", "--shards", "1"]),
                _run("ray 2 shards", server, source, folder, args.concurrency, args.latency_ms,
                     ["--ray", "auto", "--shards", "2"]),
            ]
    finally:
        server.close()
    print(f"P10: {args.lines:,} lines, {args.latency_ms:g} ms latency, --concurrency {args.concurrency} "
          "in total, same input and server")
    print("| run | exit | whole job | Ray ready | first request | run phase | req/s (run phase) | lines |")
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        def sec(key: str, run: dict[str, object] = run) -> str:
            value = run[key]
            return "—" if value is None else f"{value:.2f} s"  # type: ignore[str-format]
        rate = run["req_per_s"]
        print(f"| {run['label']} | {run['exit']} | {sec('wall_s')} | {sec('ray_ready_s')} | "
              f"{sec('first_request_s')} | {sec('run_s')} | "
              f"{'—' if rate is None else f'{rate:,.0f}'} | {run['lines_out']:,} |")
        if run["stderr"]:
            print(f"  {run['label']}: {run['stderr']}", file=sys.stderr)


if __name__ == "__main__":
    main()
