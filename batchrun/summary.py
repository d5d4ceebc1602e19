"""The figures of a job: counts by outcome and error kind, tokens, cost, latency percentiles.

One class feeds both the end of ``run`` (live, record by record) and ``status`` (from the files).
"""

from __future__ import annotations

import time
from array import array
from collections import Counter
from typing import Any

__all__ = ["Summary", "percentile"]


def percentile(sorted_values: Any, q: float) -> float | None:
    """The nearest-rank percentile ``q`` (0–100) of an already sorted sequence."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), round(q / 100.0 * len(sorted_values) + 0.5)))
    return float(sorted_values[rank - 1])


class Summary:
    """Counts and totals, fed one finished record at a time."""

    def __init__(self) -> None:
        self.succeeded = 0
        self.failed: Counter[str] = Counter()
        self.already_done = 0
        self.not_run = 0  # left unfinished by a stop; a rerun does them
        self.kept_failed = 0  # failed for good in an earlier run, not retried (--retry-failed)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0
        self.cost_unknown = 0
        self.attempts = 0
        self.retries = 0
        self.latencies = array("d")
        self.started = time.monotonic()
        self.wall_s: float | None = None

    @property
    def finished(self) -> int:
        return self.succeeded + sum(self.failed.values())

    @property
    def failures(self) -> int:
        return sum(self.failed.values())

    def add(self, record: dict[str, Any]) -> None:
        """Count one output record (a results line or an errors line)."""
        error = record.get("error")
        kind = error.get("code") if isinstance(error, dict) else None
        if kind is None:
            self.succeeded += 1
        else:
            self.failed[str(kind)] += 1
        usage = record.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens += usage.get("prompt_tokens") or 0
            self.completion_tokens += usage.get("completion_tokens") or 0
            if usage.get("cost_usd") is None and kind is None:
                self.cost_unknown += 1
        self.cost_usd += record.get("billed_usd") or 0.0
        attempts = record.get("attempts") or 0
        self.attempts += attempts
        self.retries += max(attempts - 1, 0)
        latency = record.get("latency_s")
        if isinstance(latency, (int, float)) and kind is None:
            self.latencies.append(latency)

    def close(self) -> None:
        self.wall_s = time.monotonic() - self.started

    def latency_percentiles(self) -> dict[str, float | None]:
        ordered = sorted(self.latencies)
        return {f"p{q}": percentile(ordered, q) for q in (50, 95, 99)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "succeeded": self.succeeded,
            "failed": dict(self.failed),
            "already_done": self.already_done,
            "not_run": self.not_run,
            "kept_failed": self.kept_failed,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
            "cost_unknown": self.cost_unknown,
            "attempts": self.attempts,
            "retries": self.retries,
            "latency_s": self.latency_percentiles(),
            "wall_s": self.wall_s,
        }

    def lines(self) -> list[str]:
        """The closing summary, as the CLI prints it."""
        wall = self.wall_s if self.wall_s is not None else time.monotonic() - self.started
        rate = self.finished / wall if wall > 0 else 0.0
        out = [
            f"succeeded {self.succeeded:,}  failed {self.failures:,}"
            + (f"  already done {self.already_done:,}" if self.already_done else "")
            + (f"  kept as failed {self.kept_failed:,}" if self.kept_failed else "")
            + (f"  not run {self.not_run:,}" if self.not_run else ""),
        ]
        if self.failed:
            out.append("failed by kind: " + ", ".join(f"{k} {n:,}" for k, n in self.failed.most_common()))
        cost = f"${self.cost_usd:.6f}" + (f" (+{self.cost_unknown:,} of unknown cost)" if self.cost_unknown else "")
        out.append(
            f"tokens in {self.prompt_tokens:,}  out {self.completion_tokens:,}  cost {cost}"
            f"  attempts {self.attempts:,} ({self.retries:,} retries)"
        )
        p = self.latency_percentiles()
        if p["p50"] is not None:
            out.append(
                f"latency p50 {p['p50']:.3f} s  p95 {p['p95']:.3f} s  p99 {p['p99']:.3f} s"
            )
        out.append(f"wall time {wall:.2f} s  ({rate:,.1f} req/s)")
        return out
