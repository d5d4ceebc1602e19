"""The scenarios P1–P9: each runs its clients against the bench server and returns one Table."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.clients import BATCHRUN, OPENAI, RAW, run_named
from bench.inputs import make_input
from bench.measure import ClientRun, Server, run_client
from bench.report import Goal, Skipped, Table, fmt_count, fmt_ratio, fmt_seconds, standard_columns

__all__ = ["SCENARIOS", "Context"]

_SCAN = (
    "import sys, orjson\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    for line in f:\n"
    "        orjson.loads(line)\n"
)


@dataclass
class Context:
    """What every scenario shares: the server, a work folder and the run options."""

    server: Server
    workdir: Path
    quick: bool = False
    big: bool = False
    openai_missing: str | None = None
    p6_minutes: float | None = None  # run P6 this long (its line count follows) instead of 2 min
    finished_jobs: dict[tuple[int, int], tuple[Path, Path]] = field(default_factory=dict)
    _serial: itertools.count = field(default_factory=itertools.count)

    def lines(self, full: int, quick: int) -> int:
        """The line count for this run: ``quick`` under --quick, else ``full``."""
        return quick if self.quick else full

    def input(self, lines: int, prompt_bytes: int = 60) -> Path:
        """A generated input file (made once, then reused)."""
        return make_input(self.workdir, lines, prompt_bytes)

    def output(self, name: str) -> Path:
        """A fresh output path in its own folder (batchrun writes files beside its output)."""
        folder = self.workdir / f"run-{next(self._serial):03d}-{name.replace(' ', '_')}"
        folder.mkdir()
        return folder / "out.jsonl"

    def run(self, client: str, source: Path, lines: int, concurrency: int, **kw) -> ClientRun:
        """Measure one client over ``source`` into a fresh output; prints a progress note."""
        label = kw.pop("label", None) or client
        print(f"  … {label}: {lines:,} lines", file=sys.stderr, flush=True)
        return run_named(client, self.server, source, self.output(label), lines=lines,
                         concurrency=concurrency, label=label, **kw)


def _by_label(table: Table, label: str) -> ClientRun | None:
    for row in table.rows:
        if isinstance(row, ClientRun) and row.label == label:
            return row
    return None


def _throughput_table(ctx: Context, key: str, title: str, lines: int, concurrency: int,
                      latency_ms: float) -> Table:
    """Run raw aiohttp, the openai SDK loop and batchrun over the same input."""
    source = ctx.input(lines)
    table = Table(key, title)
    for client in (RAW, OPENAI, BATCHRUN):
        if client == OPENAI and ctx.openai_missing:
            table.rows.append(Skipped(OPENAI, ctx.openai_missing))
            continue
        table.rows.append(ctx.run(client, source, lines, concurrency, latency_ms=latency_ms))
    table.columns = standard_columns(_by_label(table, RAW))
    return table


def _rate_ratio(run: ClientRun | None, base: ClientRun | None) -> float | None:
    if run is None or base is None or not run.req_per_s or not base.req_per_s:
        return None
    return run.req_per_s / base.req_per_s


def _complete(run: ClientRun | None) -> bool:
    """The run sent every line and all of them succeeded."""
    return run is not None and run.exit_code == 0 and run.server.get("ok") == run.lines


def _ratio_goal(text: str, value: float | None, minimum: float, complete: bool) -> Goal:
    figure = fmt_ratio(value) + ("" if complete else " (incomplete run)")
    return Goal(text, figure, None if value is None else (value >= minimum and complete))


def p1(ctx: Context) -> Table:
    """Zero latency, C=64: the client's own cost per request decides the rate."""
    lines = ctx.lines(20_000, 4_000)
    table = _throughput_table(ctx, "P1", f"zero latency, C=64, {lines:,} lines", lines, 64, 0.0)
    raw, sdk, ours = (_by_label(table, x) for x in (RAW, OPENAI, BATCHRUN))
    table.goals = [
        _ratio_goal("batchrun ≥ 0.8× raw aiohttp req/s", _rate_ratio(ours, raw), 0.8,
                    _complete(ours)),
        _ratio_goal("batchrun ≥ 10× the openai SDK loop req/s", _rate_ratio(ours, sdk), 10.0,
                    _complete(ours)),
    ]
    return table


def p2(ctx: Context) -> Table:
    """100 ms latency, C=200: the rate should approach Little's law, C / L."""
    lines = ctx.lines(3_000, 1_000)
    concurrency, latency = 200, 0.1
    little = concurrency / latency
    title = f"100 ms latency, C={concurrency}, {lines:,} lines (Little's law C/L = {little:,.0f}/s)"
    table = _throughput_table(ctx, "P2", title, lines, concurrency, latency * 1000)
    table.columns.insert(4, ("of C/L", lambda r: fmt_ratio(r.req_per_s and r.req_per_s / little)))
    raw, ours = _by_label(table, RAW), _by_label(table, BATCHRUN)
    table.goals = [_ratio_goal("batchrun ≥ 0.9× raw aiohttp req/s", _rate_ratio(ours, raw), 0.9,
                               _complete(ours))]
    table.notes.append("req/s counts from the first request the server saw to the client's exit, "
                       "so the last wave's 100 ms and the shutdown are included")
    return table


def _rate_columns(target: float) -> list[tuple[str, Callable[[ClientRun], str]]]:
    return [
        ("arrivals/s", lambda r: f"{r.arrival_rate:.2f}" if r.arrival_rate else "n/a"),
        ("× target", lambda r: fmt_ratio(r.arrival_rate and r.arrival_rate / target, 3)),
        ("max in 1 s", lambda r: fmt_count(r.server.get("max_per_1s"))),
        ("429s", lambda r: fmt_count(r.server.get("rate_limited"))),
    ]


def p3(ctx: Context) -> Table:
    """``--rpm 1200`` against a server enforcing exactly 20 per sliding second."""
    lines, rate = ctx.lines(400, 100), 20.0
    source = ctx.input(lines)
    table = Table("P3", f"--rpm 1200 for batchrun, {lines:,} lines, server enforcing "
                  f"{rate:g} per sliding second (429 + Retry-After + X-RateLimit-Reset)")
    table.rows.append(Skipped(RAW, "no rate limiter (uncapped); not run against a limit"))
    ours = ctx.run(BATCHRUN, source, lines, 16, rate=rate, extra=["--rpm", "1200"])
    table.rows.append(ours)
    table.columns = [*standard_columns(None)[:3], *_rate_columns(rate),
                     *standard_columns(None)[4:8]]
    achieved = ours.arrival_rate / rate if ours.arrival_rate else None
    peak = ours.server.get("max_per_1s")
    limited = ours.server.get("rate_limited", 0)
    table.goals = [
        Goal("achieved 0.97–1.0× the target (arrivals, first to last)", fmt_ratio(achieved, 3),
             None if achieved is None else 0.97 <= achieved <= 1.0),
        Goal("no 1-second window above 22 requests", fmt_count(peak), peak is not None and
             peak <= 22),
        Goal("zero 429", fmt_count(limited), limited == 0 and _complete(ours)),
    ]
    table.notes.append("batchrun runs with its default --max-attempts here, so a 429 is retried")
    return table


def _finished_job(ctx: Context, lines: int, prompt_bytes: int) -> tuple[Path, Path] | None:
    return ctx.finished_jobs.get((lines, prompt_bytes))


def p4(ctx: Context) -> Table:
    """Peak RSS must not grow with the input: 10k vs 100k (and 1M with --big) 500-byte prompts."""
    sizes = [1_000, 10_000] if ctx.quick else [10_000, 100_000]
    if ctx.big:
        sizes.append(1_000_000)
    table = Table("P4", "peak RSS vs input size, 500-byte prompts, zero latency, C=64")
    for client, lines in itertools.product((RAW, BATCHRUN), sizes):
        source = ctx.input(lines, 500)
        run = ctx.run(client, source, lines, 64, label=f"{client} {lines // 1000:,}k")
        table.rows.append(run)
        if client == BATCHRUN and _complete(run):
            ctx.finished_jobs[(lines, 500)] = (source, Path(str(run.output_path)))
    table.rows.append(Skipped(OPENAI, "not run: it reads every line into memory, and 100k lines "
                              "take minutes (its RSS at P1 size is in P1)"))
    table.columns = standard_columns(lambda run: _by_label(table, f"{RAW} {run.lines // 1000:,}k"))
    for client in (RAW, BATCHRUN):
        small = _by_label(table, f"{client} {sizes[0] // 1000:,}k")
        for lines in sizes[1:]:
            large = _by_label(table, f"{client} {lines // 1000:,}k")
            ratio = large.maxrss_kb / small.maxrss_kb if small and large else None
            goal = Goal(f"{client} peak RSS at {lines:,} ≤ 1.3× at {sizes[0]:,} lines (flat)",
                        fmt_ratio(ratio), None if ratio is None else ratio <= 1.3)
            table.goals.append(goal if client == BATCHRUN else Goal(goal.text, goal.figure, None))
    table.notes.append("raw aiohttp's RSS ratios are shown for reference (no goal: n/a)")
    return table


def _scan_run(ctx: Context, results: Path, lines: int) -> ClientRun:
    argv = [sys.executable, "-c", _SCAN, str(results)]
    ctx.server.reset()
    print("  … bare orjson scan of the results", file=sys.stderr, flush=True)
    return run_client("orjson scan", argv, lines=lines, server=ctx.server, workdir=results.parent)


def p5(ctx: Context) -> Table:
    """Rerunning a finished job must cost about a scan of its output and send nothing."""
    lines = ctx.lines(100_000, 10_000)
    table = Table("P5", f"rerun of a finished {lines:,}-line job (500-byte prompts)")
    job = _finished_job(ctx, lines, 500)
    if job is None:
        source = ctx.input(lines, 500)
        first = ctx.run(BATCHRUN, source, lines, 64, label="batchrun first run")
        table.rows.append(first)
        job = (source, Path(str(first.output_path)))
    source, output = job
    print(f"  … batchrun rerun: {lines:,} lines", file=sys.stderr, flush=True)
    rerun = run_named(BATCHRUN, ctx.server, source, output, lines=lines, concurrency=64,
                      label="batchrun rerun")
    scan = _scan_run(ctx, output, lines)
    table.rows += [rerun, scan]
    table.columns = [
        ("lines", lambda r: fmt_count(r.lines)),
        ("wall", lambda r: fmt_seconds(r.wall_s)),
        ("× scan", lambda r: fmt_ratio(r.wall_s / scan.wall_s)),
        ("requests sent", lambda r: fmt_count(r.requests)),
        ("CPU", lambda r: fmt_seconds(r.cpu_s)),
        ("peak RSS", lambda r: f"{r.maxrss_kb / 1024:,.1f} MB"),
        ("exit", lambda r: str(r.exit_code)),
    ]
    ratio = rerun.wall_s / scan.wall_s
    table.goals = [
        Goal("rerun wall time ≤ 3× a bare orjson scan of the results", fmt_ratio(ratio),
             ratio <= 3.0 and rerun.exit_code == 0),
        Goal("zero requests sent", fmt_count(rerun.requests), rerun.requests == 0),
    ]
    table.notes.append(f"results file: {output.stat().st_size / 1e6:,.1f} MB; both times are "
                       "process spawn to exit (interpreter start-up included)")
    return table


def _p6_columns(table: Table) -> list[tuple[str, Callable[[ClientRun], str]]]:
    def share(run: ClientRun) -> str:
        return f"{100 * run.server['rate_limited'] / run.requests:.1f} %" if run.requests else "n/a"

    return [
        ("lines", lambda r: fmt_count(r.lines)),
        ("ok", lambda r: fmt_count(r.server.get("ok"))),
        ("requests", lambda r: fmt_count(r.requests)),
        ("429s", lambda r: fmt_count(r.server.get("rate_limited"))),
        ("429 share", share),
        ("ok/min", lambda r: fmt_count(r.req_per_s and r.req_per_s * 60)),
        ("max in 1 s", lambda r: fmt_count(r.server.get("max_per_1s"))),
        ("wall", lambda r: fmt_seconds(r.wall_s)),
        ("CPU µs/req", lambda r: fmt_count(r.cpu_us_per_req)),
        ("exit", lambda r: str(r.exit_code)),
    ]


def _steady(run: ClientRun) -> tuple[float | None, int]:
    """Successes per minute over the whole minutes after the first one, and how many there were."""
    minutes = run.server.get("ok_per_minute") or []
    steady = minutes[1:-1]  # the first finds the limit; the last is partial
    return (sum(steady) / len(steady) if steady else None), len(steady)


def p6(ctx: Context) -> Table:
    """A limit the client is not told: 300 rpm, enforced as 5 per sliding second with 429s."""
    rpm = 300.0
    lines = int(ctx.p6_minutes * rpm) if ctx.p6_minutes else ctx.lines(600, 120)
    source = ctx.input(lines)
    table = Table("P6", f"limit unknown to the client: {rpm:g} rpm enforced as {rpm / 60:g} per "
                  f"sliding second (429 + Retry-After only), {lines:,} lines, 50 ms latency, C=16")
    table.rows.append(Skipped(RAW, "no retries or limiter: most lines would fail with 429"))
    ours = ctx.run(BATCHRUN, source, lines, 16, hidden_rpm=rpm, latency_ms=50.0,
                   extra=["--max-attempts", "20"])
    table.rows.append(ours)
    table.columns = _p6_columns(table)
    share = ours.server["rate_limited"] / ours.requests if ours.requests else None
    achieved = ours.req_per_s * 60 / rpm if ours.req_per_s else None
    table.goals = [
        Goal("≤ 10 % of requests get 429", "n/a" if share is None else f"{100 * share:.1f} %",
             None if share is None else share <= 0.10),
        _ratio_goal("≥ 0.9× of 300 rpm achieved (successes, first request to exit)", achieved,
                    0.9, _complete(ours)),
    ]
    steady, minutes = _steady(ours)
    if steady is not None:
        table.goals.append(Goal(f"steady rate ≥ 0.9× of 300 rpm (ok/min over minutes 2–{minutes + 1})",
                                f"{steady:,.0f}/min = {fmt_ratio(steady / rpm)}", steady >= 0.9 * rpm))
    table.notes.append("batchrun runs with --max-attempts 20 so that no line fails for good")
    table.notes.append(f"ok per minute: {ours.server.get('ok_per_minute')}")
    return table


def p7(ctx: Context) -> Table:
    """Start-up: process start to the first request the server sees, small and huge inputs."""
    small, large = 100, ctx.lines(1_000_000, 100_000)
    table = Table("P7", f"start-up: process start to the first request seen, {small:,} vs "
                  f"{large:,} lines")
    plan = [(RAW, small), (RAW, large), (OPENAI, small), (BATCHRUN, small), (BATCHRUN, large)]
    for client, lines in plan:
        label = f"{client} {lines:,}"
        if client == OPENAI and ctx.openai_missing:
            table.rows.append(Skipped(label, ctx.openai_missing))
            continue
        table.rows.append(ctx.run(client, ctx.input(lines), lines, 64, label=label,
                                  stop_after_first=lines > small))
    table.columns = [("lines", lambda r: fmt_count(r.lines)),
                     ("start-up", lambda r: fmt_seconds(r.startup_s)),
                     ("peak RSS", lambda r: f"{r.maxrss_kb / 1024:,.1f} MB"),
                     ("exit", lambda r: "stopped after the first request" if r.killed
                      else str(r.exit_code))]
    first, second = _by_label(table, f"{BATCHRUN} {small:,}"), _by_label(table, f"{BATCHRUN} "
                                                                            f"{large:,}")
    for run in (first, second):
        if run is not None:
            table.goals.append(Goal(f"{run.label} lines: start-up ≤ 0.5 s",
                                    fmt_seconds(run.startup_s),
                                    run.startup_s is not None and run.startup_s <= 0.5))
    if first and second and first.startup_s is not None and second.startup_s is not None:
        growth = second.startup_s - first.startup_s
        table.goals.append(Goal("not growing with input (≤ +0.1 s from 100 to the large input)",
                                f"{growth:+.3f} s", growth <= 0.1))
    return table


def _wall_columns() -> list[tuple[str, Callable[[ClientRun], str]]]:
    return [
        ("lines", lambda r: fmt_count(r.lines)),
        ("ok", lambda r: fmt_count(r.server.get("ok"))),
        ("requests", lambda r: fmt_count(r.requests)),
        ("upstream 429s", lambda r: fmt_count(r.server.get("upstream_limited"))),
        ("wall", lambda r: fmt_seconds(r.wall_s)),
        ("req/s", lambda r: fmt_count(r.req_per_s)),
        ("CPU µs/req", lambda r: fmt_count(r.cpu_us_per_req)),
        ("exit", lambda r: str(r.exit_code)),
    ]


def p8(ctx: Context) -> Table:
    """Sparse upstream 429s (1 %, ``Retry-After: 1``) must cost those requests their wait only."""
    lines, concurrency, latency_ms, share = ctx.lines(3_000, 1_000), 32, 20.0, 0.01
    source = ctx.input(lines)
    table = Table("P8", f"1 % upstream 429s (Retry-After: 1; the header styles in turn: Retry-After "
                  f"alone, + X-RateLimit-* with Remaining 0, in error.metadata.headers) vs none, "
                  f"{lines:,} lines, {latency_ms:g} ms latency, C={concurrency}")
    extra = ["--max-attempts", "10"]
    clean = ctx.run(BATCHRUN, source, lines, concurrency, label="batchrun, no faults",
                    latency_ms=latency_ms, extra=extra)
    faulty = ctx.run(BATCHRUN, source, lines, concurrency, label="batchrun, 1 % upstream 429s",
                     latency_ms=latency_ms, upstream_429=share, upstream_retry_after=1, extra=extra)
    table.rows += [clean, faulty]
    table.columns = _wall_columns()
    bound = 1.5 * clean.wall_s + 2.5
    table.goals = [
        Goal("wall(1 % 429s) ≤ 1.5 × wall(no faults) + 2.5 s",
             f"{faulty.wall_s:.2f} s vs {bound:.2f} s (no faults: {clean.wall_s:.2f} s)",
             faulty.wall_s <= bound and _complete(faulty) and _complete(clean)),
    ]
    table.notes.append("the ideal is the no-fault time plus the 1 s those requests must wait")
    return table


def p9(ctx: Context) -> Table:
    """Thousands in flight at seconds of latency, started under ``ulimit -n 1024``."""
    lines, concurrency = ctx.lines(12_000, 4_000), ctx.lines(3_000, 1_500)
    latency, nofile = 2.0, 1024
    little = concurrency / latency
    source = ctx.input(lines)
    table = Table("P9", f"C={concurrency:,}, {latency:g} s latency, {lines:,} lines, started under a "
                  f"soft open-file limit of {nofile:,} (Little's law C/L = {little:,.0f}/s)")
    for client in (RAW, BATCHRUN):
        table.rows.append(ctx.run(client, source, lines, concurrency, latency_ms=latency * 1000,
                                  nofile=nofile))
    table.columns = standard_columns(_by_label(table, RAW))
    table.columns.insert(4, ("of C/L", lambda r: fmt_ratio(r.req_per_s and r.req_per_s / little)))
    raw, ours = _by_label(table, RAW), _by_label(table, BATCHRUN)
    table.goals = [_ratio_goal("batchrun ≥ 0.9× raw aiohttp req/s", _rate_ratio(ours, raw), 0.9,
                               _complete(ours))]
    if ours is not None and ours.exit_code != 0:
        table.notes.append("batchrun's last words: " + ours.stderr_tail.strip()[-300:])
    table.notes.append("the raw loop raises its own soft limit to the hard one; batchrun does it "
                       "itself from --concurrency")
    return table


SCENARIOS: dict[str, Callable[[Context], Table]] = {
    "P1": p1, "P2": p2, "P3": p3, "P4": p4, "P5": p5, "P6": p6, "P7": p7, "P8": p8, "P9": p9,
}
