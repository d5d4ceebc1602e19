"""The simulator's billing ledger: what reached generation, what was billed, what was turned away."""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from .received import ReceivedLog

__all__ = ["Entry", "Ledger"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One request that reached generation, billed or not."""

    gen_id: str
    model: str
    provider: str
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int
    cost: float
    billed: bool
    outcome: str
    prompt_key: str
    t: float
    streamed: bool = False
    finish_reason: str | None = None
    # Set on a row of a batch (billed at the batch price when the batch is settled); None on sync.
    batch_id: str | None = None
    custom_id: str | None = None


class Ledger:
    """A thread-safe record of generations and rejections, read by tests from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Kept here so that whoever holds the ledger (SimServer.ledger) can also see what arrived.
        self.received = ReceivedLog()
        self._clear()

    def _clear(self) -> None:
        self._t0 = time.monotonic()
        self._entries: list[Entry] = []
        self._by_id: dict[str, Entry] = {}
        self._rejections: Counter[int] = Counter()
        self._faults: Counter[str] = Counter()
        self._rate_limited = 0
        self._accepted: list[float] = []
        self._billed_usd = 0.0

    # -- writers (the server's loop thread) -------------------------------------------------

    def add(self, entry: Entry) -> None:
        """Append one generation."""
        with self._lock:
            self._entries.append(entry)
            self._by_id[entry.gen_id] = entry
            if entry.billed:
                self._billed_usd += entry.cost

    def reject(self, status: int, *, rate_limited: bool = False) -> None:
        """Count a request turned away before generation, by HTTP status."""
        with self._lock:
            self._rejections[status] += 1
            if rate_limited:
                self._rate_limited += 1

    def fault(self, kind: str) -> None:
        """Count one injected fault, whatever its outcome."""
        with self._lock:
            self._faults[kind] += 1

    def accept(self, t: float) -> None:
        """Note that the rate limiter admitted a request at monotonic time `t`."""
        with self._lock:
            self._accepted.append(t)

    def reset(self) -> None:
        """Forget everything (POST /_sim/reset), the received-request log included."""
        with self._lock:
            self._clear()
        self.received.clear()

    # -- readers ----------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        """Return a snapshot of every generation, oldest first."""
        with self._lock:
            return list(self._entries)

    def billed_total_usd(self) -> float:
        """Return the sum of `cost` over billed generations."""
        with self._lock:
            return self._billed_usd

    def billed_by_prompt(self) -> dict[str, int]:
        """Return how many times each prompt (sha256 of its canonical messages) was billed."""
        with self._lock:
            return dict(Counter(e.prompt_key for e in self._entries if e.billed))

    def billed_by_batch(self) -> dict[str, dict[str, Any]]:
        """Return, per batch id, the rows billed, their distinct custom_ids and the sum billed."""
        with self._lock:
            rows = [e for e in self._entries if e.billed and e.batch_id is not None]
        out: dict[str, dict[str, Any]] = {}
        for e in rows:
            empty: dict[str, Any] = {"rows": 0, "custom_ids": set(), "billed_usd": 0.0}
            doc = out.setdefault(e.batch_id or "", empty)
            doc["rows"] += 1
            doc["custom_ids"].add(e.custom_id)
            doc["billed_usd"] += e.cost
        for doc in out.values():
            doc["distinct_custom_ids"] = len(doc.pop("custom_ids"))
        return out

    def by_gen_id(self, gen_id: str) -> Entry | None:
        """Return the generation with this id, or None."""
        with self._lock:
            return self._by_id.get(gen_id)

    def accepted_per_second(self) -> dict[int, int]:
        """Return admitted requests per whole second since the ledger started (or was reset)."""
        with self._lock:
            return dict(Counter(int(t - self._t0) for t in self._accepted))

    def max_accepted_in_window(self, window_s: float) -> int:
        """Return the largest number of admitted requests in any sliding window of `window_s`."""
        with self._lock:
            ts = sorted(self._accepted)
        best = 0
        for i, t in enumerate(ts):
            # Half-open window [t, t + window_s), the same rule the rate limiter enforces.
            j = bisect.bisect_left(ts, t + window_s, lo=i)
            best = max(best, j - i)
        return best

    def counts(self) -> dict[str, Any]:
        """Return summary counters: generations by outcome, billed, rejections by status, faults."""
        with self._lock:
            outcomes = Counter(e.outcome for e in self._entries)
            billed = sum(1 for e in self._entries if e.billed)
            batch_rows = [e for e in self._entries if e.billed and e.batch_id is not None]
            rejected = sum(self._rejections.values())
            return {
                "requests": len(self._entries) + rejected,
                "generations": len(self._entries),
                "billed": billed,
                "unbilled": len(self._entries) - billed,
                "outcomes": dict(outcomes),
                "rejections": {str(k): v for k, v in sorted(self._rejections.items())},
                "rate_limited": self._rate_limited,
                "faults": dict(self._faults),
                "accepted": len(self._accepted),
                "billed_total_usd": self._billed_usd,
                "batch_rows_billed": len(batch_rows),
                "batch_billed_usd": sum(e.cost for e in batch_rows),
            }

    def to_json(self) -> bytes:
        """Serialise counts, totals and every entry as JSON bytes (GET /_sim/ledger)."""
        entries = self.entries()
        return orjson.dumps(
            {
                "counts": self.counts(),
                "billed_total_usd": self.billed_total_usd(),
                "billed_by_prompt": self.billed_by_prompt(),
                "billed_by_batch": self.billed_by_batch(),
                "accepted_per_second": {str(k): v for k, v in self.accepted_per_second().items()},
                "entries": [asdict(e) for e in entries],
            }
        )
