"""Durations and money in words, the one way every message, plan line and summary writes them."""

from __future__ import annotations

__all__ = ["duration_text", "usd"]


def duration_text(seconds: float) -> str:
    """A duration for people: "40 s", "12 min", "3.5 h", "2.0 days"."""
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def usd(amount: float) -> str:
    """A cost for people, with enough digits whatever its size: $12.34, $0.0123, $0.000016."""
    if amount >= 1:
        return f"${amount:,.2f}"
    if amount >= 0.01:
        return f"${amount:.4f}"
    if amount == 0:
        return "$0"
    return f"${amount:.6f}" if amount >= 1e-6 else "<$0.000001"
