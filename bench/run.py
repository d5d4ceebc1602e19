"""Run the benchmark scenarios and print one table per scenario, plus results/latest.json.

Usage: ``python -m bench [--only P1,P3] [--quick] [--big] [--slow] [--p6-minutes N] [--keep]``
or ``python bench/run.py ...``. Default: P1–P5, P7, P8 and P9 (P4 without its 1,000,000-line
case); P6 takes about two minutes (``--p6-minutes N`` for a longer job that shows the steady
rate) and runs with ``--slow`` or when named in ``--only``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python bench/run.py``: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench.clients import openai_missing
from bench.measure import Server, pinning_note
from bench.report import Table
from bench.scenarios import SCENARIOS, Context

_DEFAULT = ("P1", "P2", "P3", "P4", "P5", "P7", "P8", "P9")
_RESULTS = Path(__file__).resolve().parent / "results"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated scenarios, e.g. P1,P3 (P6 included)")
    parser.add_argument("--quick", action="store_true", help="scale every input down")
    parser.add_argument("--big", action="store_true", help="add P4's 1,000,000-line case")
    parser.add_argument("--slow", action="store_true", help="add P6 (about 2 minutes)")
    parser.add_argument("--p6-minutes", type=float, default=None,
                        help="run P6 for about N minutes (300 lines a minute) to show its steady rate")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder of inputs")
    parser.add_argument("--json", type=Path, default=_RESULTS / "latest.json",
                        help="where to write the results as JSON")
    return parser.parse_args(argv)


def _selected(args: argparse.Namespace) -> list[str]:
    if not args.only:
        return [*_DEFAULT, *(["P6"] if args.slow else [])]
    names = [name.strip().upper() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return sorted(set(names), key=list(SCENARIOS).index)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "placement": pinning_note(),
        "versions": {p: _version(p) for p in ("batchrun", "aiohttp", "orjson", "uvloop", "openai")},
    }


def _print_machine(info: dict[str, Any]) -> None:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    print(f"machine: nproc {info['nproc']}, {info['cpu']}, Python {info['python']}, "
          f"{info['platform']}")
    print(f"placement: {info['placement']}")
    print(f"versions: {versions}")


def _pin_harness() -> None:
    """Keep the harness on core 0 with the server, so core 1 is the client's alone."""
    if shutil.which("taskset") and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})


def _run_all(names: list[str], ctx: Context) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    for name in names:
        print(f"running {name} …", file=sys.stderr, flush=True)
        table = SCENARIOS[name](ctx)
        tables[name] = table
        print("\n" + table.render(), flush=True)
    return tables


def _write_json(path: Path, info: dict[str, Any], args: argparse.Namespace,
                tables: dict[str, Table]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "options": {"quick": args.quick, "big": args.big, "slow": args.slow, "only": args.only,
                    "p6_minutes": args.p6_minutes},
        "scenarios": {name: table.to_dict() for name, table in tables.items()},
    }
    path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    print(f"\nresults written to {path}")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    args = _parse_args(argv)
    names = _selected(args)
    info = machine()
    _print_machine(info)
    _pin_harness()
    workdir = Path(tempfile.mkdtemp(prefix="batchrun-bench-"))
    server = Server()
    ctx = Context(server, workdir, quick=args.quick, big=args.big, openai_missing=openai_missing(),
                  p6_minutes=args.p6_minutes)
    if ctx.openai_missing:
        print(f"openai SDK: n/a: {ctx.openai_missing}")
    try:
        tables = _run_all(names, ctx)
    finally:
        server.close()
        if args.keep:
            print(f"inputs and outputs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    _write_json(args.json, info, args, tables)


if __name__ == "__main__":
    main()
