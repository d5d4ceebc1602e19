"""A job's summary from its output files alone (also while the job is running)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from batchrun.config import output_paths
from batchrun.errors import ConfigError
from batchrun.ledger import read_records
from batchrun.summary import Summary

__all__ = ["job_summary"]


def job_summary(output: Path) -> Summary:
    """Count the results file and the errors file (last line per id, ids with a result excluded)."""
    paths = output_paths(output)
    if not paths["results"].exists() and not paths["errors"].exists():
        raise ConfigError(f"no output at {output}: give the results file of a job (-o of batchrun run)")
    summary = Summary()
    done: set[str] = set()
    for _, record in read_records(paths["results"]):
        if isinstance(record, dict):
            summary.add(record)
            done.add(str(record.get("custom_id")))
    failing: dict[str, dict] = {}
    for _, record in read_records(paths["errors"]):
        if isinstance(record, dict) and str(record.get("custom_id")) not in done:
            failing[str(record.get("custom_id"))] = record
    for record in failing.values():
        summary.add(record)
    summary.wall_s = _span_s(paths["results"], paths["errors"])
    return summary


def _span_s(*paths: Path) -> float:
    """Seconds from the first to the last ``finished_at`` in the files (second resolution)."""
    stamps = [
        record["finished_at"]
        for path in paths
        for _, record in read_records(path)
        if isinstance(record, dict) and isinstance(record.get("finished_at"), str)
    ]
    if not stamps:
        return 0.0
    first, last = (datetime.fromisoformat(s.replace("Z", "+00:00")) for s in (min(stamps), max(stamps)))
    return max((last - first).total_seconds(), 1.0)
