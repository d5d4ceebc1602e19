"""A run report: one self-contained HTML file of plots drawn from the output files.

Plotting approach: hand-written inline SVG. The plots are simple (lines, bars, histograms), so a
few hundred lines of our own draw them without a dependency; the file needs no network, no
JavaScript and no CDN to open, stays small (kilobytes, whatever the job's size, because data is
binned before drawing), prints well and can be checked structurally by tests. matplotlib would add
a ~40 MB install for PNGs that cannot be inspected; plotly or Vega would inline megabytes of
JavaScript. Times come from ``finished_at``, which has second resolution.
"""

from __future__ import annotations

import html
import math
from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from batchrun.errors import ConfigError
from batchrun.ledger import final_records
from batchrun.status import JobStatus, check_results_file, job_status, parse_stamp
from batchrun.summary import percentile

__all__ = ["ReportData", "collect", "render", "write_report"]

_W, _H = 560, 250
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 64, 18, 26, 42
_BLUE, _RED, _GREEN, _GREY, _INK = "#2f6fb0", "#d0453b", "#2e9a5c", "#9aa5b1", "#243447"
_KIND_COLORS = ["#d0453b", "#e6932e", "#8e5fb8", "#c23d80", "#1b9e9e", "#b89b2e", "#4b3f9e", "#7a4b2a"]


@dataclass
class ReportData:
    """Per-record figures of a job's final records, kept compactly (arrays, not records)."""

    second: array[int] = field(default_factory=lambda: array("q"))  # finished_at, epoch seconds
    ok: array[int] = field(default_factory=lambda: array("b"))  # 1 success, 0 failure
    kind: list[str | None] = field(default_factory=list)  # None: success
    retried: array[int] = field(default_factory=lambda: array("b"))  # 1: succeeded after a retry
    cost: array[float] = field(default_factory=lambda: array("d"))
    latency: array[float] = field(default_factory=lambda: array("d"))  # successes only
    prompt_tokens: array[int] = field(default_factory=lambda: array("q"))  # records with usage
    completion_tokens: array[int] = field(default_factory=lambda: array("q"))
    attempts: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)


def collect(output: Path) -> ReportData:
    """Read the job's final records (the same ones ``status`` counts) into ``ReportData``."""
    data = ReportData()
    last_stamp: Any = None
    last_second = -1
    check_results_file(output)
    for record in final_records(output):
        stamp = record.get("finished_at")
        if stamp != last_stamp:
            last_stamp, parsed = stamp, parse_stamp(stamp)
            last_second = -1 if parsed is None else parsed
        error = record.get("error")
        kind = str(error.get("code")) if isinstance(error, dict) else None
        if last_second >= 0:
            data.second.append(last_second)
            data.ok.append(1 if kind is None else 0)
            data.kind.append(kind)
            data.retried.append(1 if kind is None and (record.get("attempts") or 0) > 1 else 0)
            data.cost.append(float(record.get("billed_usd") or 0.0))
        if kind is not None:
            data.kinds[kind] += 1
        usage = record.get("usage")
        if isinstance(usage, dict) and kind != "invalid_input":
            data.prompt_tokens.append(int(usage.get("prompt_tokens") or 0))
            data.completion_tokens.append(int(usage.get("completion_tokens") or 0))
        latency = record.get("latency_s")
        if kind is None and isinstance(latency, (int, float)):
            data.latency.append(float(latency))
        attempts = record.get("attempts")
        if isinstance(attempts, int) and attempts > 0:
            data.attempts[attempts] += 1
    return data


def write_report(output: Path, destination: Path | None = None) -> Path:
    """Write the report of ``output`` to ``destination`` (default ``<stem>.report.html`` beside it)."""
    status = job_status(output)
    page = render(status, collect(output))
    if destination is None:
        name = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.name
        destination = output.with_name(f"{name}.report.html")
    try:
        destination.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot write the report {destination}: {exc.strerror or exc} (choose another place with -o)"
        ) from exc
    return destination


# -- page -----------------------------------------------------------------------------------


def render(status: JobStatus, data: ReportData) -> str:
    """The whole HTML page as a string."""
    summary = status.summary
    p = summary.latency_percentiles()
    start = min(data.second) if data.second else None
    cards = [
        ("Succeeded", f"{summary.succeeded:,}"),
        ("Failed", f"{summary.failures:,}"),
        ("Cost", f"${summary.cost_usd:.6f}"),
        ("Tokens in / out", f"{summary.prompt_tokens:,} / {summary.completion_tokens:,}"),
        ("Latency p50 / p95 / p99", " / ".join(_secs(p[k]).removesuffix(" s") for k in ("p50", "p95", "p99")) + " s"),
        ("Attempts", f"{summary.attempts:,} ({summary.retries:,} retries)"),
        ("Span", f"{summary.wall_s or 0:,.0f} s"),
        ("Run", {True: "running", False: "finished / not running", None: "unknown"}[status.active]),
    ]
    stats = "".join(
        f'<div class="stat"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div></div>' for k, v in cards
    )
    subtitle = f"{_e(str(status.output))}"
    if start is not None:
        subtitle += f" · first result {_e(_clock(start))} UTC"
    if status.total_lines is not None:
        subtitle += f" · {status.finished:,} of {status.total_lines:,} input lines finished"
    panels = [
        _panel("Requests completed over time", _completed_chart(data),
               "Cumulative finished requests; time since the first result (finished_at, 1 s resolution)."),
        _panel("Cumulative cost", _cost_chart(data), "USD billed, summed in the order requests finished."),
        _panel("Latency of successful requests", _latency_chart(data),
               "Histogram of latency_s with the p50, p95 and p99 marked."),
        _panel("Errors by kind over time", _errors_chart(data),
               "Final failures per time bin, stacked by error kind; grey: ids that failed at "
               "first and succeeded on a retry (their transient error kinds are in the --log trace)."),
        _panel("Tokens per request", _tokens_chart(data), "Prompt (in) and completion (out) tokens."),
        _panel("Attempts per request", _attempts_chart(data), "How many attempts each id needed."),
    ]
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return _PAGE.format(
        title=_e(f"batchrun report: {status.output.name}"), subtitle=subtitle, stats=stats,
        panels="".join(panels), generated=_e(generated),
    )


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #243447;
  background: #f4f6f8; margin: 0; padding: 24px; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }}
.sub {{ color: #5b6b7b; font-size: 13px; margin-bottom: 16px; word-break: break-all; }}
.stats {{ display: grid; grid-template-columns: repeat(4, 1fr); gap: 10px; margin-bottom: 16px; }}
.stat {{ background: #fff; border-radius: 8px; padding: 10px 14px; box-shadow: 0 1px 2px #0001; }}
.stat .k {{ font-size: 12px; color: #5b6b7b; }}
.stat .v {{ font-size: 18px; font-weight: 600; margin-top: 2px; }}
.grid {{ display: grid; grid-template-columns: repeat(2, 1fr); gap: 14px; }}
.panel {{ background: #fff; border-radius: 8px; padding: 12px 14px 8px; box-shadow: 0 1px 2px #0001; }}
.panel h2 {{ font-size: 15px; margin: 0 0 2px; }}
.panel p {{ font-size: 12px; color: #5b6b7b; margin: 0 0 6px; }}
svg {{ width: 100%; height: auto; display: block; }}
svg text {{ font-size: 11px; fill: #4a5a6a; }}
.legend {{ font-size: 12px; color: #4a5a6a; margin: 2px 0 4px 60px; }}
.legend span {{ margin-right: 14px; white-space: nowrap; display: inline-block; }}
.legend i {{ display: inline-block; width: 10px; height: 10px; margin-right: 5px; vertical-align: -1px; }}
footer {{ color: #8795a1; font-size: 12px; margin-top: 16px; }}
@media (max-width: 900px) {{ .grid {{ grid-template-columns: 1fr; }}
  .stats {{ grid-template-columns: repeat(2, 1fr); }} }}
</style></head><body>
<h1>{title}</h1>
<div class="sub">{subtitle}</div>
<div class="stats">{stats}</div>
<div class="grid">{panels}</div>
<footer>Generated by batchrun on {generated} from the results and errors files.</footer>
</body></html>
"""


def _panel(title: str, svg: str, caption: str) -> str:
    return f'<section class="panel"><h2>{_e(title)}</h2><p>{_e(caption)}</p>{svg}</section>'


# -- charts ---------------------------------------------------------------------------------


def _time_bins(data: ReportData) -> tuple[int, int, int]:
    """(first second, bin width in seconds, number of bins) for at most ~120 bins."""
    first, last = min(data.second), max(data.second)
    span = last - first + 1
    width = next((w for w in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600,
                              43200, 86400) if span / w <= 120), 86400 * math.ceil(span / 86400 / 120))
    return first, width, math.ceil(span / width)


def _completed_chart(data: ReportData) -> str:
    if not data.second:
        return _empty("No finished requests yet.")
    first, width, bins = _time_bins(data)
    ok, failed = [0] * bins, [0] * bins
    for second, good in zip(data.second, data.ok, strict=True):
        (ok if good else failed)[(second - first) // width] += 1
    xs = [0.0] + [(i + 1) * width for i in range(bins)]
    series = [("succeeded", _BLUE, _cumulative(ok))]
    if any(failed):
        series.append(("failed", _RED, _cumulative(failed)))
    return _line_chart(xs, series, y_label="requests", fill_first=True)


def _cost_chart(data: ReportData) -> str:
    if not data.second:
        return _empty("No finished requests yet.")
    first, width, bins = _time_bins(data)
    spent = [0.0] * bins
    for second, cost in zip(data.second, data.cost, strict=True):
        spent[(second - first) // width] += cost
    xs = [0.0] + [(i + 1) * width for i in range(bins)]
    return _line_chart(xs, [("cost", _GREEN, _cumulative(spent))], y_label="USD", fill_first=True, money=True)


def _latency_chart(data: ReportData) -> str:
    if not data.latency:
        return _empty("No successful requests yet.")
    values = sorted(data.latency)
    marks = [(f"p{q}", percentile(values, q)) for q in (50, 95, 99)]
    return _histogram(values, _BLUE, x_label="seconds", marks=marks)


_RECOVERED = "succeeded after retries"


def _errors_chart(data: ReportData) -> str:
    if not data.kinds and not any(data.retried):
        return _empty("No failed or retried requests.", good=True)
    first, width, bins = _time_bins(data)
    kinds = [k for k, _ in data.kinds.most_common()]
    color = {k: _KIND_COLORS[i % len(_KIND_COLORS)] for i, k in enumerate(kinds)}
    color[_RECOVERED] = _GREY
    counts = {k: [0] * bins for k in [*kinds, _RECOVERED]}
    for second, kind, retried in zip(data.second, data.kind, data.retried, strict=True):
        if kind is not None:
            counts[kind][(second - first) // width] += 1
        elif retried:
            counts[_RECOVERED][(second - first) // width] += 1
    order = [*kinds, _RECOVERED]
    peak = max(sum(counts[k][i] for k in order) for i in range(bins))
    frame = _Frame(0, bins * width, 0, peak, money=False)
    parts = [frame.axes(x_label=f"time since first result ({_unit_label(bins * width)})",
                        y_label="requests", time_axis=True)]
    bar_w = max(frame.sx(width) - frame.sx(0) - 1, 1)
    for i in range(bins):
        base = 0
        for kind in order:
            n = counts[kind][i]
            if n:
                y0, y1 = frame.sy(base), frame.sy(base + n)
                parts.append(
                    f'<rect x="{frame.sx(i * width) + 0.5:.1f}" y="{y1:.1f}" width="{bar_w:.1f}" '
                    f'height="{y0 - y1:.1f}" fill="{color[kind]}"><title>{_e(kind)}: {n}</title></rect>'
                )
                base += n
    legend = [(f"{k} ({data.kinds[k]:,})", color[k]) for k in kinds]
    recovered = sum(data.retried)
    if recovered:
        legend.append((f"{_RECOVERED} ({recovered:,})", _GREY))
    if not kinds:
        legend.append(("no final failures", _GREEN))
    return _svg("".join(parts)) + _legend(legend)


def _tokens_chart(data: ReportData) -> str:
    if not data.prompt_tokens:
        return _empty("No usage reported yet.")
    half = _W // 2
    left = _histogram(sorted(data.prompt_tokens), _BLUE, x_label="prompt tokens (in)", width=half,
                      integer=True, wrap=False)
    right = _histogram(sorted(data.completion_tokens), "#e6932e", x_label="completion tokens (out)",
                       width=half, integer=True, wrap=False)
    return _svg(f'<g>{left}</g><g transform="translate({half},0)">{right}</g>')


def _attempts_chart(data: ReportData) -> str:
    if not data.attempts:
        return _empty("No attempts recorded yet.")
    top = max(data.attempts)
    labels = list(range(1, top + 1))
    counts = [data.attempts.get(a, 0) for a in labels]
    frame = _Frame(0.5, top + 0.5, 0, max(counts), money=False)
    parts = [frame.axes(x_label="attempts", y_label="requests", x_ticks=[float(a) for a in labels])]
    slot = frame.sx(1.5) - frame.sx(0.5)
    bar_w = max(min(slot * 0.7, 60), 2)
    total = sum(counts)
    for a, n in zip(labels, counts, strict=True):
        x = frame.sx(a) - bar_w / 2
        y = frame.sy(n)
        fill = _BLUE if a == 1 else "#e6932e"
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{frame.sy(0) - y:.1f}" '
            f'fill="{fill}"><title>{a} attempts: {n}</title></rect>'
        )
        if n:
            parts.append(
                f'<text x="{frame.sx(a):.1f}" y="{y - 4:.1f}" text-anchor="middle">'
                f"{n:,} ({100 * n / total:.1f}%)</text>"
            )
    return _svg("".join(parts))


# -- drawing helpers ------------------------------------------------------------------------


class _Frame:
    """Maps data coordinates into the plot area of one chart."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float, *, money: bool,
                 width: int = _W, height: int = _H) -> None:
        if x1 <= x0:
            x1 = x0 + 1
        # Headroom above the highest value, for the labels drawn over bars and line ends.
        self.y_ticks = _nice_ticks(y0, y0 + (y1 - y0) * 1.1 if y1 > y0 else y0 + 1, whole=not money)
        self.x0, self.x1 = x0, x1
        self.y0, self.y1 = self.y_ticks[0], self.y_ticks[-1]
        self.money = money
        self.width, self.height = width, height
        self.left, self.right = _PAD_L, width - _PAD_R
        self.top, self.bottom = _PAD_T, height - _PAD_B

    def sx(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def sy(self, y: float) -> float:
        return self.bottom - (y - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)

    def axes(self, *, x_label: str, y_label: str, x_ticks: list[float] | None = None,
             time_axis: bool = False, integer: bool = False) -> str:
        parts = []
        for tick in self.y_ticks:
            y = self.sy(tick)
            parts.append(f'<line x1="{self.left}" x2="{self.right}" y1="{y:.1f}" y2="{y:.1f}" '
                         'stroke="#e3e8ee"/>')
            parts.append(f'<text x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                         f"{_e(_num(tick, self.money))}</text>")
        if x_ticks is not None:
            ticks = x_ticks
        elif time_axis:
            unit = _UNIT_S[_unit_label(self.x1)]
            ticks = [t * unit for t in _nice_ticks(self.x0 / unit, self.x1 / unit, inside=True)]
        else:
            ticks = _nice_ticks(self.x0, self.x1, inside=True)
        for tick in ticks:
            x = self.sx(tick)
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{self.bottom}" y2="{self.bottom + 4}" '
                         'stroke="#8795a1"/>')
            text = _elapsed(tick, self.x1) if time_axis else _num(tick, False, integer=integer)
            parts.append(f'<text x="{x:.1f}" y="{self.bottom + 16}" text-anchor="middle">{_e(text)}</text>')
        parts.append(f'<line x1="{self.left}" x2="{self.right}" y1="{self.bottom}" y2="{self.bottom}" '
                     'stroke="#8795a1"/>')
        parts.append(f'<text x="{(self.left + self.right) / 2:.1f}" y="{self.height - 6}" '
                     f'text-anchor="middle">{_e(x_label)}</text>')
        parts.append(f'<text transform="translate(14,{(self.top + self.bottom) / 2:.1f}) rotate(-90)" '
                     f'text-anchor="middle">{_e(y_label)}</text>')
        return "".join(parts)


def _line_chart(xs: list[float], series: list[tuple[str, str, list[float]]], *, y_label: str,
                fill_first: bool = False, money: bool = False) -> str:
    peak = max(max(values) for _, _, values in series)
    frame = _Frame(0, xs[-1], 0, peak, money=money)
    parts = [frame.axes(x_label=f"time since first result ({_unit_label(xs[-1])})", y_label=y_label,
                        time_axis=True)]
    for index, (name, color, values) in enumerate(series):
        points = " ".join(f"{frame.sx(x):.1f},{frame.sy(y):.1f}" for x, y in zip(xs, values, strict=True))
        if fill_first and index == 0:
            parts.append(f'<polygon points="{frame.sx(xs[0]):.1f},{frame.sy(0):.1f} {points} '
                         f'{frame.sx(xs[-1]):.1f},{frame.sy(0):.1f}" fill="{color}" fill-opacity="0.12"/>')
        parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2.2" '
                     f'stroke-linejoin="round"><title>{_e(name)}</title></polyline>')
        last = values[-1]
        parts.append(f'<text x="{frame.sx(xs[-1]) - 4:.1f}" y="{frame.sy(last) - 6:.1f}" text-anchor="end" '
                     f'style="fill:{color};font-weight:600">{_e(name)} {_e(_num(last, money, exact=True))}'
                     "</text>")
    legend = _legend([(name, color) for name, color, _ in series]) if len(series) > 1 else ""
    return _svg("".join(parts)) + legend


def _histogram(values: list[float] | list[int], color: str, *, x_label: str, width: int = _W,
               marks: list[tuple[str, float | None]] | None = None, integer: bool = False,
               wrap: bool = True) -> str:
    lo, hi = float(values[0]), float(values[-1])
    distinct = len(set(values)) if integer and hi - lo <= 40 else 0
    if integer and distinct and hi - lo + 1 <= 40:
        pad = max(0, (7 - int(hi - lo)) // 2)  # a lone value gets neighbours, not the whole width
        lo, hi = max(lo - pad, 0.0), hi + pad
        edges = [lo - 0.5 + i for i in range(int(hi - lo) + 2)]  # one bar per whole value
    else:
        step = _nice_step((hi - lo) / 30 if hi > lo else 1.0)
        start = math.floor(lo / step) * step
        count = max(math.ceil((hi - start) / step + 1e-9), 1)
        if start + count * step <= hi:
            count += 1
        edges = [start + i * step for i in range(count + 1)]
    counts = [0] * (len(edges) - 1)
    n_bins = len(counts)
    span = edges[-1] - edges[0]
    for v in values:
        index = min(int((v - edges[0]) / span * n_bins), n_bins - 1)
        counts[index] += 1
    frame = _Frame(edges[0], edges[-1], 0, max(counts), money=False, width=width)
    ticks = None
    if integer and n_bins <= 9 and edges[1] - edges[0] == 1:
        ticks = [e + 0.5 for e in edges[:-1]]
    elif integer:
        ticks = [t for t in _nice_ticks(edges[0], edges[-1], inside=True) if float(t).is_integer()]
    parts = [frame.axes(x_label=x_label, y_label="requests", x_ticks=ticks, integer=integer)]
    for i, n in enumerate(counts):
        if not n:
            continue
        x0, x1 = frame.sx(edges[i]), frame.sx(edges[i + 1])
        y = frame.sy(n)
        parts.append(
            f'<rect x="{x0 + 0.5:.1f}" y="{y:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
            f'height="{frame.sy(0) - y:.1f}" fill="{color}" fill-opacity="0.85">'
            f"<title>{_e(_num(edges[i], False))}–{_e(_num(edges[i + 1], False))}: {n}</title></rect>"
        )
    placed = [(name, value, frame.sx(min(max(value, edges[0]), edges[-1])))
              for name, value in marks or [] if value is not None]
    for _, _, x in placed:
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.top}" y2="{frame.bottom}" '
                     f'stroke="{_INK}" stroke-dasharray="4 3" stroke-width="1.2"/>')
    parts.extend(_mark_labels(placed, frame))
    if not marks:
        mean = sum(values) / len(values)
        parts.append(f'<text x="{frame.right}" y="13" text-anchor="end">'
                     f"mean {mean:,.1f} · max {values[-1]:,.0f}</text>")
    body = "".join(parts)
    return _svg(body, width=width) if wrap else body


# Mark labels: 11 px bold; a character is at most ~7 px wide, a row 15 px high.
_LABEL_CHAR_W, _LABEL_ROW_H = 7.0, 15


def _mark_labels(placed: list[tuple[str, float, float]], frame: _Frame) -> list[str]:
    """Labels for the dashed marks (p50, p95, p99) that never overlap one another.

    Each label goes right of its line (left near the right edge), in the first row where it
    overlaps no label already placed: close marks stack their labels instead of printing them
    over each other. A white halo keeps a line that crosses a label from hiding its text.
    """
    rows: list[list[tuple[float, float]]] = []
    out = []
    for name, value, x in placed:
        text = f"{name} {_secs(value)}"
        width = len(text) * _LABEL_CHAR_W
        right_side = x + 3 + width <= frame.right
        start = x + 3 if right_side else x - 3 - width
        span = (start - 2, start + width + 2)
        row = next((i for i, taken in enumerate(rows)
                    if all(span[1] <= a or b <= span[0] for a, b in taken)), len(rows))
        if row == len(rows):
            rows.append([])
        rows[row].append(span)
        at = (f'x="{x + 3 if right_side else x - 3:.1f}" y="{frame.top + 12 + _LABEL_ROW_H * row}" '
              f'text-anchor="{"start" if right_side else "end"}"')
        # The halo is a white-stroked copy drawn first (paint-order is not read everywhere).
        out.append(f'<text {at} style="fill:#fff;stroke:#fff;stroke-width:3;font-weight:600;'
                   f'font-size:11px">{_e(text)}</text>')
        out.append(f'<text {at} style="fill:{_INK};font-weight:600;font-size:11px">{_e(text)}</text>')
    return out


def _legend(items: list[tuple[str, str]]) -> str:
    """An HTML legend under the chart: it wraps however many entries there are."""
    entries = "".join(
        f'<span><i style="background:{color}"></i>{_e(name)}</span>' for name, color in items
    )
    return f'<div class="legend">{entries}</div>'



def _svg(body: str, *, width: int = _W, height: int = _H) -> str:
    return (f'<svg viewBox="0 0 {width} {height}" role="img">'
            f"{body}</svg>")


def _empty(message: str, *, good: bool = False) -> str:
    color = _GREEN if good else _GREY
    return _svg(f'<text x="{_W / 2}" y="64" text-anchor="middle" '
                f'style="font-size:15px;fill:{color}">{_e(message)}</text>', height=120)


def _cumulative(values: list[int] | list[float]) -> list[float]:
    out, total = [0.0], 0.0
    for v in values:
        total += v
        out.append(total)
    return out


def _nice_step(raw: float, *, whole: bool = False) -> float:
    if raw <= 0:
        return 1.0
    if whole and raw <= 1:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if whole and factor == 2.5 and magnitude < 10:
            continue  # counts get whole-number ticks
        if raw <= factor * magnitude:
            return float(factor * magnitude)
    return float(10 * magnitude)


def _nice_ticks(lo: float, hi: float, *, count: int = 5, inside: bool = False,
                whole: bool = False) -> list[float]:
    step = _nice_step((hi - lo) / count, whole=whole)
    if inside:
        first = math.ceil(lo / step - 1e-9) * step
        ticks = []
        t = first
        while t <= hi + 1e-9 * step:
            ticks.append(round(t, 12))
            t += step
        return ticks
    start = math.floor(lo / step) * step
    end = math.ceil(hi / step - 1e-9) * step
    n = round((end - start) / step)
    return [round(start + i * step, 12) for i in range(n + 1)]


def _num(value: float, money: bool, *, integer: bool = False, exact: bool = False) -> str:
    if money:
        if exact:
            return f"${value:.6f}"
        return f"${value:.6g}" if value else "$0"
    if integer or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.3g}"


def _unit_label(span_s: float) -> str:
    return "s" if span_s < 180 else "min" if span_s < 10800 else "h"


_UNIT_S = {"s": 1.0, "min": 60.0, "h": 3600.0}


def _elapsed(seconds: float, span_s: float) -> str:
    return f"{round(seconds / _UNIT_S[_unit_label(span_s)], 6):g}"


def _secs(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f} s" if value < 10 else f"{value:,.1f} s"


def _clock(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _e(text: str) -> str:
    return html.escape(text, quote=True)
