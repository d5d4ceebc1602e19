"""A job's figures from its output files alone, also while the job is running.

The counts come from the same ``Summary`` the end of ``run`` prints, fed the same records: every
results line, then the last errors line of each id that has no result. On top of that ``status``
says whether a run holds the output's lock, the rate over the last minute and, when the input
named in the manifest can be counted, how much is left and when it should be done.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from batchrun.config import output_paths
from batchrun.errors import ConfigError
from batchrun.inputs import is_table, measure
from batchrun.ledger import final_records, read_manifest, run_active
from batchrun.summary import Summary
from batchrun.units import duration_text

__all__ = [
    "JobStatus",
    "batch_lines",
    "check_results_file",
    "job_batches",
    "job_status",
    "parse_stamp",
]

RATE_WINDOW_S = 60


_GIVE_RESULTS = "give the results file of a run (-o of batchrun run)"


def check_results_file(output: Path) -> None:
    """Raise a ConfigError saying what ``output`` is when it is not the results file of a run.

    A results file has its manifest beside it, or records that carry ``custom_id``, ``response``
    and ``error`` (OpenAI's batch output lines too, which have no manifest); its first record is
    enough to tell. A missing results file is fine when the errors file exists (all ids failed).
    """
    paths = output_paths(output)
    if output.is_dir():
        found = sorted(p.name[: -len(".manifest.json")] + ".jsonl" for p in output.glob("*.manifest.json"))
        hint = f", e.g. {output / found[0]}" if found else ""
        raise ConfigError(f"{output} is a folder, not a results file: {_GIVE_RESULTS}{hint}")
    if not paths["results"].exists() and not paths["errors"].exists():
        raise ConfigError(f"no output at {output}: {_GIVE_RESULTS}")
    if paths["manifest"].exists():
        return
    if is_table(output):
        raise ConfigError(f"{output} looks like an input file (a table of rows, not results): {_GIVE_RESULTS}")
    for key in ("results", "errors"):
        first = _first_record(paths[key])
        if first is _NOTHING:
            continue
        if isinstance(first, dict) and "custom_id" in first and "response" in first and "error" in first:
            return
        if isinstance(first, dict):
            raise ConfigError(
                f"{paths[key]} looks like an input file (its lines are requests, not results): {_GIVE_RESULTS}"
            )
        raise ConfigError(f"{paths[key]} is not a results file (its first line is not a record): {_GIVE_RESULTS}")


_NOTHING = object()


def _first_record(path: Path) -> Any:
    """The first non-blank line of ``path`` parsed as JSON (None if it is not JSON), or _NOTHING."""
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.strip():
                    try:
                        return orjson.loads(line)
                    except orjson.JSONDecodeError:
                        return None
    except FileNotFoundError:
        return _NOTHING
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return _NOTHING



def parse_stamp(stamp: Any) -> int | None:
    """A ``finished_at`` stamp (``2026-11-25T10:00:00Z``) as epoch seconds, or None."""
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


class _StampReader:
    """Parses stamps, remembering the last one: records finished in one second share it."""

    __slots__ = ("_last", "_value")

    def __init__(self) -> None:
        self._last: Any = None
        self._value: int | None = None

    def __call__(self, stamp: Any) -> int | None:
        if stamp != self._last:
            self._last, self._value = stamp, parse_stamp(stamp)
        return self._value




@dataclass
class JobStatus:
    """Where a job stands: its summary plus what only a look at the files and the lock can tell."""

    output: Path
    summary: Summary
    active: bool | None
    input_path: str | None
    total_lines: int | None  # non-blank input lines (None: input unknown or unreadable)
    total_exact: bool
    first_finished: int | None  # epoch seconds
    last_finished: int | None
    recent: int  # records finished in the last RATE_WINDOW_S seconds
    rate_per_s: float  # over the last minute (or the whole run when it was shorter)
    batches: list[dict[str, Any]] = field(default_factory=list)  # batch mode: from the journal

    @property
    def finished(self) -> int:
        return self.summary.finished

    @property
    def remaining(self) -> int | None:
        if self.total_lines is None:
            return None
        return max(self.total_lines - self.finished, 0)

    @property
    def eta_s(self) -> float | None:
        """Seconds until the last line is done at the recent rate; only while a run is active."""
        remaining = self.remaining
        if not self.active or remaining is None or self.rate_per_s <= 0:
            return None
        return remaining / self.rate_per_s

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary.to_dict(),
            "output": str(self.output),
            "active": self.active,
            "input": self.input_path,
            "total_lines": self.total_lines,
            "total_exact": self.total_exact,
            "finished": self.finished,
            "remaining": self.remaining,
            "first_finished_at": _iso(self.first_finished),
            "last_finished_at": _iso(self.last_finished),
            "rate_last_minute_per_s": self.rate_per_s,
            "eta_s": self.eta_s,
            "batches": self.batches,
        }

    def lines(self) -> list[str]:
        """The summary as ``run`` prints it, then progress, rate and whether a run is active."""
        out = self.summary.lines()
        state = {True: "running", False: "not running", None: "unknown (no file locks here)"}[self.active]
        out.append(f"run {state}; last finished {_iso(self.last_finished) or 'never'}")
        out.append(f"rate over the last minute {self.rate_per_s:,.2f} req/s ({self.recent:,} finished)")
        if self.total_lines is not None:
            approx = "" if self.total_exact else "~"
            done = self.finished
            share = 100.0 * done / self.total_lines if self.total_lines else 100.0
            text = f"progress {done:,} of {approx}{self.total_lines:,} lines ({share:.1f} %)"
            if self.eta_s is not None:
                text += f", ETA {duration_text(self.eta_s)}"
            elif self.active is False and self.remaining:
                text += f"; {self.remaining:,} not finished (run the job again to resume)"
            out.append(text)
        if self.batches:
            out.extend(batch_lines(self.batches))
        return out


def job_batches(output: Path, *, now: float | None = None) -> list[dict[str, Any]]:
    """The job's batches as its journal tells them (batch mode): id, model, state, counts, age."""
    from batchrun.batch.journal import journal_path, read_journal

    now_s = now if now is not None else datetime.now(timezone.utc).timestamp()
    out = []
    for sub in read_journal(journal_path(output)).values():
        out.append({
            "batch_id": sub.batch_id, "nonce": sub.nonce, "model": sub.model, "requests": sub.count,
            "state": sub.state, "status": sub.status, "counts": sub.counts, "cost_usd": sub.cost_usd,
            "purged": sub.purged, "age_s": max(now_s - sub.t0, 0.0), "message": sub.message or None,
        })
    return out


def batch_lines(batches: list[dict[str, Any]]) -> list[str]:
    """One line per batch, under a count by state."""
    states = Counter(b["state"] for b in batches)
    out = ["batches " + ", ".join(f"{n} {state}" for state, n in states.most_common())]
    for b in batches:
        counts = b["counts"] or {}
        state = b["state"] if b["state"] != "submitted" else (b["status"] or "submitted")
        if b["state"] == "collected" and b["status"]:
            state = f"collected ({b['status']})"
        text = (f"  {b['batch_id'] or '(no batch id: ' + b['state'] + ')'}  {b['model']}  {state}  "
                f"{counts.get('completed', 0):,}/{b['requests']:,} done, {counts.get('failed', 0):,} failed"
                f"  age {duration_text(b['age_s'])}")
        if b["cost_usd"] is not None:
            text += f"  ${b['cost_usd']:.6f}"
        if b["purged"]:
            text += "  purged"
        out.append(text)
    return out


def job_status(output: Path, *, now: float | None = None, check_input: bool = True) -> JobStatus:
    """Read a job's output files (and its lock and manifest) and say where it stands."""
    summary = Summary()
    per_second: Counter[int] = Counter()
    stamp_of = _StampReader()
    check_results_file(output)
    for record in final_records(output):
        summary.add(record)
        second = stamp_of(record.get("finished_at"))
        if second is not None:
            per_second[second] += 1
    first = min(per_second) if per_second else None
    last = max(per_second) if per_second else None
    active = run_active(output)
    manifest = read_manifest(output)
    runs = manifest.get("runs") if manifest is not None else None
    walls = [r.get("wall_s") for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []
    if walls and not active:
        # The runs' own wall times, summed: the span of the stamps misses pauses and gaps.
        summary.wall_s = float(sum(w for w in walls if isinstance(w, (int, float))))
    else:
        summary.wall_s = float(max(last - first, 1)) if first is not None and last is not None else 0.0
    now_s = int(now if now is not None else datetime.now(timezone.utc).timestamp())
    end = now_s if active else last
    recent, rate = 0, 0.0
    if end is not None and first is not None:
        recent = sum(n for second, n in per_second.items() if end - RATE_WINDOW_S < second <= end)
        span = min(RATE_WINDOW_S, max(end - first + 1, 1))
        rate = recent / span
    if not check_input:
        manifest = None
    input_path = total = None
    exact = False
    if manifest is not None:
        raw_path = (manifest.get("input") or {}).get("path")
        if isinstance(raw_path, str):
            input_path = raw_path
            with contextlib.suppress(OSError, ConfigError):
                size = measure(Path(raw_path))
                total, exact = size.lines, size.exact
    return JobStatus(output, summary, active, input_path, total, exact, first, last, recent, rate,
                     job_batches(output, now=now))


def _iso(epoch: int | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

