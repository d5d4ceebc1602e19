"""Tables, goals and number formatting for the printed report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.measure import ClientRun

__all__ = ["Goal", "Skipped", "Table", "fmt_count", "fmt_ratio", "fmt_seconds"]

Cell = Callable[[ClientRun], str]


@dataclass(frozen=True)
class Skipped:
    """A client not measured in a scenario, and why."""

    label: str
    reason: str


@dataclass(frozen=True)
class Goal:
    """One target of a scenario: what it asks, the measured figure, and the verdict."""

    text: str
    figure: str
    passed: bool | None  # None: could not be judged

    @property
    def verdict(self) -> str:
        """PASS, MISS or n/a."""
        return "n/a" if self.passed is None else ("PASS" if self.passed else "MISS")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"goal": self.text, "figure": self.figure, "verdict": self.verdict}


def fmt_count(value: float | None) -> str:
    """A whole number with thousands separators, or n/a."""
    return "n/a" if value is None else f"{value:,.0f}"


def fmt_ratio(value: float | None, digits: int = 2) -> str:
    """A ratio such as ``0.93×``, or n/a."""
    return "n/a" if value is None else f"{value:.{digits}f}×"


def fmt_seconds(value: float | None) -> str:
    """Seconds with three decimals, or n/a."""
    return "n/a" if value is None else f"{value:.3f} s"


Baseline = Callable[[ClientRun], "ClientRun | None"]


def _ratio(run: ClientRun, baseline: Baseline) -> str:
    base = baseline(run)
    if base is None or not base.req_per_s or not run.req_per_s:
        return "n/a"
    return fmt_ratio(run.req_per_s / base.req_per_s)


def _ok(run: ClientRun) -> str:
    ok = run.output_lines if run.output_lines is not None else run.server.get("ok")
    return fmt_count(ok)


def _errors(run: ClientRun) -> str:
    tags = [f"exit {run.exit_code}"] if run.exit_code and not run.killed else []
    if run.killed:
        tags.append("stopped")
    rate_limited = run.server.get("rate_limited", 0)
    if rate_limited:
        tags.append(f"{rate_limited:,}×429")
    return ", ".join(tags) or "-"


def standard_columns(baseline: ClientRun | Baseline | None) -> list[tuple[str, Cell]]:
    """The columns every table shows; ``× raw`` is against ``baseline`` (raw aiohttp), a run or
    a function that picks the run to compare each row with."""
    if not callable(baseline):
        fixed = baseline

        def baseline(run: ClientRun) -> ClientRun | None:
            return fixed

    return [
        ("lines", lambda r: fmt_count(r.lines)),
        ("ok", _ok),
        ("req/s", lambda r: fmt_count(r.req_per_s)),
        ("× raw", lambda r: _ratio(r, baseline)),
        ("CPU µs/req*", lambda r: fmt_count(r.cpu_us_per_req)),
        ("peak RSS", lambda r: f"{r.maxrss_kb / 1024:,.1f} MB"),
        ("start-up", lambda r: fmt_seconds(r.startup_s)),
        ("server µs/req", lambda r: fmt_count(r.server_us_per_req)),
        ("errors", _errors),
    ]


@dataclass
class Table:
    """One scenario's measurements, printed as a table with its goals below."""

    key: str
    title: str
    rows: list[ClientRun | Skipped] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    columns: list[tuple[str, Cell]] = field(default_factory=list)

    def render(self) -> str:
        """The table as text."""
        headers = ["client", *(name for name, _ in self.columns)]
        body = [self._cells(row) for row in self.rows]
        measured = [cells for row, cells in zip(self.rows, body, strict=True)
                    if isinstance(row, ClientRun)]
        widths = [len(h) for h in headers]
        widths[0] = max(len(cells[0]) for cells in body) if body else widths[0]
        for cells in measured:
            widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=True)]
        lines = [f"{self.key}  {self.title}", _join(headers, widths), _join(
            ["-" * w for w in widths], widths)]
        lines += [_join(cells, widths) for cells in body]
        lines += [f"  goal: {g.text}: {g.figure}  {g.verdict}" for g in self.goals]
        lines += [f"  note: {note}" for note in self.notes]
        if any(name.endswith("*") for name in headers):
            lines.append("  * client CPU (user+sys, interpreter start-up included) / requests sent")
        return "\n".join(lines)

    def _cells(self, row: ClientRun | Skipped) -> list[str]:
        if isinstance(row, Skipped):
            return [row.label, f"n/a: {row.reason}"]
        return [row.label, *(cell(row) for _, cell in self.columns)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "title": self.title,
            "goals": [g.to_dict() for g in self.goals],
            "notes": self.notes,
            "runs": [
                {"label": r.label, "skipped": r.reason} if isinstance(r, Skipped) else r.to_dict()
                for r in self.rows
            ],
        }


def _join(cells: list[str], widths: list[int]) -> str:
    if len(cells) == 2 and len(widths) > 2 and cells[1].startswith("n/a: "):
        return f"{cells[0]:<{widths[0]}}  {cells[1]}"  # a skipped row spans the columns
    first = f"{cells[0]:<{widths[0]}}"
    rest = [f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=False)]
    return "  ".join([first, *rest])
