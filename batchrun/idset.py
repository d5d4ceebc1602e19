"""An exact set of ids that keeps ids ending in a number (``p123``, ``line-57``, ``r0042``) in chunks.

An id whose last two characters are ASCII digits is its chunk, everything before them, plus a number
0-99, kept as a flag in the chunk's 100 bytes: ``r12345`` is byte 45 of chunk ``r123``. Ids numbered
in sequence fill their chunks, 100 ids to a dict entry, about 2.5 bytes per id where a set of str
takes ~90. Nothing is parsed, so no two ids can meet: ``a42``, ``a042`` and ``a0042`` are byte 42 of
chunks ``a``, ``a0`` and ``a00``.

Other ids (UUIDs, hashes, names, one-digit numbers) are kept in a plain set of str, and so is the first
id of a chunk: the chunk is made when a second id of it comes, and takes the first one in. So ids too
sparse to share chunks (timestamps, prefixes used once) cost what a set costs, not a dict entry each.
The rule that keeps it exact: an id ending in two digits is flagged in its chunk when the chunk exists,
and is in the set of str when it does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Set

__all__ = ["IdSet"]

# The two-digit endings, ASCII only: str.isdigit() and int() also take other scripts' digits.
_PAIRS = tuple(f"{number:02d}" for number in range(100))
_NUMBER = {pair: number for number, pair in enumerate(_PAIRS)}
_MIN_WATCHED = 4096  # chunks with one id watched at once, or more for a large set; then it starts over


class IdSet(Set[str]):
    """An exact set of str ids that keeps ids ending in two digits as flags in shared chunks."""

    __slots__ = ("_chunks", "_forgot", "_strs", "_watched")

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._chunks: dict[str, bytearray] = {}  # chunk -> 100 flags, one per two-digit ending
        self._strs: set[str] = set()
        self._watched: dict[str, int] = {}  # chunk with one id, in _strs -> that id's ending
        self._forgot = False  # a watch list was cleared: a new chunk may have several ids in _strs
        for custom_id in ids:
            self.add(custom_id)

    def __len__(self) -> int:
        return len(self._strs) + sum(cells.count(1) for cells in self._chunks.values())

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, str):
            return False
        number = _NUMBER.get(item[-2:])
        if number is None:
            return item in self._strs
        cells = self._chunks.get(item[:-2])
        if cells is None:
            return item in self._strs
        return cells[number] == 1

    def __iter__(self) -> Iterator[str]:
        yield from self._strs
        for chunk, cells in self._chunks.items():
            for number, pair in enumerate(_PAIRS):
                if cells[number]:
                    yield chunk + pair

    def __repr__(self) -> str:
        return f"<IdSet of {len(self):,} ids>"

    def add(self, item: str) -> bool:
        """Add ``item``; True when it was not in the set yet."""
        number = _NUMBER.get(item[-2:])
        if number is not None:
            cells = self._chunks.get(item[:-2])
            if cells is not None:
                if cells[number]:
                    return False
                cells[number] = 1
                return True
            if item not in self._strs:
                self._add_unchunked(item, number)
                return True
            return False
        if item in self._strs:
            return False
        self._strs.add(item)
        return True

    def discard(self, item: str) -> bool:
        """Remove ``item`` if it is in the set; True when it was. (A chunk emptied is kept.)"""
        number = _NUMBER.get(item[-2:])
        if number is not None:
            cells = self._chunks.get(item[:-2])
            if cells is not None:
                if not cells[number]:
                    return False
                cells[number] = 0
                return True
        if item in self._strs:
            self._strs.remove(item)
            return True
        return False

    def copy(self) -> IdSet:
        """A copy, made without unpacking the chunks."""
        twin = IdSet()
        twin._chunks = {chunk: cells.copy() for chunk, cells in self._chunks.items()}
        twin._strs = self._strs.copy()
        twin._watched = self._watched.copy()
        twin._forgot = self._forgot
        return twin

    def _add_unchunked(self, item: str, number: int) -> None:
        """Add an id whose chunk does not exist: make the chunk if it is the chunk's second id."""
        chunk = item[:-2]
        first = self._watched.pop(chunk, None)
        if first is None:
            if len(self._watched) >= max(_MIN_WATCHED, len(self._chunks) + (len(self._strs) >> 5)):
                self._watched.clear()  # only memory depends on it: a chunk forgotten is made later
                self._forgot = True
            self._watched[chunk] = number
            self._strs.add(item)
            return
        cells = self._chunks[chunk] = bytearray(100)
        cells[number] = 1
        # The chunk's other ids move in from _strs: the watched one, or any, once a watch list was cleared.
        strs = self._strs
        for other_number in range(100) if self._forgot else (first,):
            other = chunk + _PAIRS[other_number]
            if other in strs:
                strs.remove(other)
                cells[other_number] = 1
