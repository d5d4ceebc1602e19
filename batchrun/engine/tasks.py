"""A small task group: every task a run starts is owned, and none outlives the group.

Python 3.10 (which batchrun supports) has no ``asyncio.TaskGroup``, and anyio would be a
dependency for one class: this is the part of their contract batchrun needs. Leaving the
``async with`` block waits for every task; the first task that fails cancels the others and its
exception is raised; cancelling the block cancels every task. When the block is left, nothing it
started is still running, so a run's result cannot change after it is returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

__all__ = ["TaskGroup"]


class TaskGroup:
    """Owns tasks started with ``start``; ``cancel_all`` stops them; the block waits for them all."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._error: BaseException | None = None

    async def __aenter__(self) -> TaskGroup:
        return self

    def start(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and self._error is None:
            self._error = error
            self.cancel_all()

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self.cancel_all()
        while self._tasks:
            try:
                await asyncio.wait(set(self._tasks))
            except asyncio.CancelledError:
                self.cancel_all()  # the block itself was cancelled: take every task with it
                if exc is None:
                    exc = asyncio.CancelledError()
        if self._error is not None and exc is None:
            raise self._error
        if isinstance(exc, asyncio.CancelledError) and kind is None:
            raise exc
