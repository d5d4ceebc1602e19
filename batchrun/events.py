"""Progress events the runner emits; the CLI (or a notebook) turns them into a display."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

__all__ = ["BatchProgress", "Event", "EventHandler", "Finished", "Notice", "Planned", "Retrying"]


@dataclass(frozen=True, slots=True)
class Planned:
    """The plan, before the first request: the one line every run prints first."""

    text: str
    total_lines: int
    total_is_estimate: bool
    already_done: int
    worst_case_usd: float | None = None


@dataclass(frozen=True, slots=True)
class Finished:
    """One id reached its final outcome (``kind`` is None for a success)."""

    custom_id: str
    kind: str | None
    tokens: int = 0  # prompt + completion tokens of its final response
    cost_usd: float = 0.0  # what its attempts billed


@dataclass(frozen=True, slots=True)
class Retrying:
    """An attempt failed and will be tried again after ``wait_s``."""

    custom_id: str
    attempt: int
    kind: str
    wait_s: float
    message: str


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the user should read: a repaired file, a model marked unavailable, a stop."""

    message: str
    important: bool = False  # shown even without progress output (a stop, a quit)


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """Batch mode: batches submitted (adopted ones included), still running, and collected."""

    submitted: int
    running: int
    collected: int


Event = Union[Planned, Finished, Retrying, Notice, BatchProgress]
EventHandler = Callable[[Event], None]
