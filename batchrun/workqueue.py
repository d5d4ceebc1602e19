"""The queue between the reader and the workers: bounded new work, retries that jump ahead."""

from __future__ import annotations

import asyncio
import collections
from typing import Generic, TypeVar

__all__ = ["WorkQueue"]

T = TypeVar("T")


class WorkQueue(Generic[T]):
    """New items wait for room (bounded read-ahead); retries never wait and are served first."""

    def __init__(self, readahead: int) -> None:
        self._readahead = readahead
        self._new: collections.deque[T] = collections.deque()
        self._retries: collections.deque[T] = collections.deque()
        self._getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._room: asyncio.Future[None] | None = None
        self.closed = False

    def __len__(self) -> int:
        return len(self._new) + len(self._retries)

    async def put(self, item: T) -> None:
        """Add new work, waiting while the read-ahead is full."""
        while len(self._new) >= self._readahead and not self.closed:
            self._room = asyncio.get_running_loop().create_future()
            await self._room
        if self.closed:
            return
        self._new.append(item)
        self._wake_getter()

    def put_retry(self, item: T) -> bool:
        """Add an item due for a retry; False when the queue is closed (the item is dropped)."""
        if self.closed:
            return False
        self._retries.append(item)
        self._wake_getter()
        return True

    async def get(self) -> T | None:
        """The next item, retries first; None once the queue is closed."""
        while True:
            if self._retries:
                return self._retries.popleft()
            if self._new:
                item = self._new.popleft()
                if self._room is not None and not self._room.done():
                    self._room.set_result(None)
                return item
            if self.closed:
                return None
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            finally:
                if not getter.done():
                    getter.cancel()

    def close(self, *, drop: bool = False) -> list[T]:
        """No more items will come; with ``drop``, forget the queued ones and return them."""
        self.closed = True
        dropped: list[T] = []
        if drop:
            dropped = [*self._retries, *self._new]
            self._retries.clear()
            self._new.clear()
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
        if self._room is not None and not self._room.done():
            self._room.set_result(None)
        return dropped

    def _wake_getter(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return
