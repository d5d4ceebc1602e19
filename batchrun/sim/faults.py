"""Fault choice: forced by header or marker, else drawn from a seeded RNG at the configured rates."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping

from .config import FAULT_KINDS, normalize_kind

__all__ = ["MARKER", "FaultPicker", "find_marker"]

# `[[sim:KIND]]` forces KIND on every attempt; `[[sim:KIND*N]]` on the first N attempts only.
MARKER = re.compile(r"\[\[sim:([A-Za-z0-9_-]+)(?:\*(\d+))?\]\]")


def find_marker(texts: list[str]) -> tuple[str, int | None] | None:
    """Return (kind, times or None for always) for the first valid marker in `texts`, or None."""
    for text in texts:
        if "[[sim:" not in text:
            continue
        for match in MARKER.finditer(text):
            kind = normalize_kind(match.group(1))
            if kind is not None:
                times = match.group(2)
                return kind, int(times) if times is not None else None
    return None


class FaultPicker:
    """Decide at most one fault per admitted request; only the loop thread calls it."""

    def __init__(self, rates: Mapping[str, float], seed: int) -> None:
        # Cumulative thresholds in FAULT_KINDS order: one uniform draw picks at most one kind.
        self._table: list[tuple[float, str]] = []
        acc = 0.0
        for kind in FAULT_KINDS:
            rate = rates.get(kind, 0.0)
            if rate > 0:
                acc += rate
                self._table.append((acc, kind))
        self._seed = seed
        self._rng = random.Random(seed)
        self._attempts: dict[str, int] = {}

    def reset(self) -> None:
        """Restart the RNG and forget marker attempt counts."""
        self._rng = random.Random(self._seed)
        self._attempts.clear()

    def choose(
        self, header: str | None, marker: tuple[str, int | None] | None, body_key: str
    ) -> str | None:
        """Return the fault for this request, or None for a normal answer."""
        if header:
            forced = normalize_kind(header)
            if forced is not None:
                return forced
        if marker is not None:
            kind, times = marker
            if times is None:
                return kind
            n = self._attempts.get(body_key, 0) + 1
            self._attempts[body_key] = n
            return kind if n <= times else None
        if not self._table:
            return None
        u = self._rng.random()
        for threshold, kind in self._table:
            if u < threshold:
                return kind
        return None
