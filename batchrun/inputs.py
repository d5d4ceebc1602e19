"""Stream an input file line by line (plain or gzip), and size it up quickly for the plan line.

JSONL is read as bytes, line by line. A CSV (or TSV) file, by its name (``.csv``, ``.csv.gz``,
``.tsv``, ``.tsv.gz``), goes through the same two calls: ``open_input`` returns a ``TableReader``
and ``iter_lines`` yields each data row as a ``TableRow``: bytes holding the row as a JSON object
(so it reads like a JSONL line), with the row's fields attached, which ``InputParser.parse``
treats as a row of data (fields fill the template; none is ever sent as a request parameter).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Union

import orjson

from batchrun.errors import ConfigError

__all__ = [
    "InputSize",
    "TableReader",
    "TableRow",
    "binary_data_at",
    "check_text",
    "fingerprint",
    "is_table",
    "iter_lines",
    "measure",
    "open_input",
]

_GZIP_MAGIC = b"\x1f\x8b"
# Below this size the plan line counts lines exactly; above it, it estimates from a sample so
# that the first request is not held back by a scan that grows with the input.
_EXACT_COUNT_BYTES = 64 * 1024 * 1024
# A CSV is counted by its records (a quoted field may hold line ends), with the csv module, which
# reads ~20x slower than counting line ends: exactly up to this size, from a sample above it.
_EXACT_TABLE_BYTES = 8 * 1024 * 1024
_BLOCK = 1024 * 1024
# The first bytes of the input are looked at once, to refuse a binary file with one line instead
# of one invalid_input record per "line" of it.
_SNIFF_BYTES = 8 * 1024  # what a peek at an open file sees
# Above this share of bytes that are not UTF-8, the file is not text (a Latin-1 file with a few
# accented letters stays well below; its bad lines become invalid_input records naming UTF-8).
_MOSTLY_NOT_UTF8 = 0.3
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


_TABLE_SUFFIXES = {".csv": ",", ".csv.gz": ",", ".tsv": "\t", ".tsv.gz": "\t"}
# The csv module refuses fields over 128 KiB by default; batchrun sets no length limit of its own.
_FIELD_LIMIT = 2**31 - 1


def _table_delimiter(path: Path) -> str | None:
    name = path.name.lower()
    for suffix, delimiter in _TABLE_SUFFIXES.items():
        if name.endswith(suffix):
            return delimiter
    return None


def is_table(path: Path) -> bool:
    """True when the input is read as CSV/TSV (by its name), not as JSONL."""
    return _table_delimiter(path) is not None


class TableRow(bytes):
    """One CSV row as JSON-object bytes, with its fields (``row``) or why it is bad (``error``).

    orjson refuses bytes subclasses: parse ``bytes(row)``, or better, read ``row.row``.
    """

    row: dict[str, str]
    error: str | None

    @classmethod
    def make(cls, row: dict[str, str], error: str | None = None) -> TableRow:
        made = cls(orjson.dumps(row))
        made.row = row
        made.error = error
        return made


class TableReader:
    """An open CSV/TSV input: a header row, then one row per record; a context manager."""

    def __init__(self, binary: BinaryIO, delimiter: str) -> None:
        self._binary = binary
        # utf-8-sig drops the BOM spreadsheet programs write; surrogateescape keeps a bad byte
        # to the row it is in, which then becomes an invalid_input record, not a stopped job.
        self._text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")
        self._delimiter = delimiter

    def __enter__(self) -> TableReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._text.close()

    def rows(self) -> Iterator[tuple[int, TableRow]]:
        """Yield (1-based line number where the row starts, row) for every non-blank data row."""
        if csv.field_size_limit() < _FIELD_LIMIT:
            csv.field_size_limit(_FIELD_LIMIT)
        reader = csv.reader(self._text, delimiter=self._delimiter)
        header = self._header(reader)
        width = len(header)
        while True:
            start = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield start, TableRow.make({}, f"not valid CSV: {exc}")
                continue
            if not any(v.strip() for v in values):
                continue
            row = dict(zip(header, values, strict=False))
            error = None
            if len(values) > width:
                error = f"row has {len(values)} values but the header has {width} columns"
            elif any(_has_bad_bytes(v) for v in values):
                error = "not valid UTF-8: save the file as UTF-8"
                row = {k: v.encode("utf-8", "replace").decode() for k, v in row.items()}
            yield start, TableRow.make(row, error)

    @staticmethod
    def _header(reader: Any) -> list[str]:
        try:
            header = next(reader)
        except StopIteration:
            return []
        except csv.Error as exc:
            raise ConfigError(f"the CSV header row cannot be read: {exc}") from exc
        header = [name.strip() for name in header]
        seen: set[str] = set()
        for name in header:
            if not name:
                raise ConfigError("the CSV header row has an empty column name: name every column")
            if name in seen:
                raise ConfigError(f"the CSV header row names column {name!r} twice")
            seen.add(name)
        return header


def _has_bad_bytes(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


InputStream = Union[BinaryIO, TableReader]


def open_input(path: Path) -> InputStream:
    """Open the input: bytes for JSONL (gzip decompressed), a TableReader for CSV/TSV.

    A clear ConfigError if it cannot be read. Use it as a context manager and pass it to
    ``iter_lines``.
    """
    binary = _open_binary(path)
    delimiter = _table_delimiter(path)
    return binary if delimiter is None else TableReader(binary, delimiter)


@contextlib.contextmanager
def readable(path: Path) -> Iterator[None]:
    """Turn the OS's reasons for not reading the input into one clear ConfigError."""
    try:
        yield
    except FileNotFoundError as exc:
        raise ConfigError(f"input file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"input is a folder, not a file: {path}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read input {path}: {exc.strerror or exc}") from exc


def _open_binary(path: Path) -> BinaryIO:
    with readable(path):
        raw = open(path, "rb")  # noqa: SIM115 - the caller closes it
    stream: io.BufferedReader | gzip.GzipFile = raw
    if raw.peek(2)[:2] == _GZIP_MAGIC:
        raw.close()  # a GzipFile given a fileobj never closes it: let gzip own the file instead
        stream = gzip.open(path, "rb")  # noqa: SIM115
    try:
        problem = binary_data_at(stream.peek(_SNIFF_BYTES)[:_SNIFF_BYTES])
    except (OSError, EOFError):
        problem = None  # a damaged gzip file: reading it says so, with the reason
    if problem is not None:
        stream.close()
        raise ConfigError(f"{path} is not a JSONL or CSV text file ({problem})")
    return stream  # type: ignore[return-value]


def check_text(path: Path) -> None:
    """Raise a ConfigError when the input (gzip decompressed) is not a text file; read its start only."""
    _open_binary(path).close()


def binary_data_at(head: bytes) -> str | None:
    """Why the first bytes of a file are not text (NUL bytes, mostly not UTF-8), or None."""
    if head.startswith(_UTF16_BOMS):
        return "it is UTF-16 text: save it as UTF-8"
    nul = head.find(b"\0")
    if nul >= 0:
        return f"binary data at byte {nul}"
    text = head.decode("utf-8", "surrogateescape")
    bad = [i for i, ch in enumerate(text) if "\udc80" <= ch <= "\udcff"]
    if head and len(bad) > _MOSTLY_NOT_UTF8 * len(head):
        first = len(text[: bad[0]].encode("utf-8", "surrogateescape"))
        return f"binary data at byte {first}"
    return None


def iter_lines(stream: InputStream) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, line without its line end) for every non-blank line.

    From a TableReader, each line is a ``TableRow`` (the row as JSON-object bytes).
    """
    try:
        if isinstance(stream, TableReader):
            yield from stream.rows()
            return
        for number, line in enumerate(stream, 1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield number, line
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ConfigError(f"cannot read input: {exc}") from exc


@dataclass(frozen=True, slots=True)
class InputSize:
    """How many lines the input has (or about how many) and their bytes, for the plan line."""

    lines: int
    text_bytes: int
    exact: bool


def measure(path: Path) -> InputSize:
    """Count the requests' lines (a CSV's records), exactly for small files, from a sample above.

    JSONL: non-blank lines. CSV/TSV: non-blank data records, read with the csv module as
    ``TableReader`` reads them, since a quoted field may hold line ends.
    """
    size = os.path.getsize(path)
    delimiter = _table_delimiter(path)
    with _open_binary(path) as stream:
        gz = isinstance(stream, gzip.GzipFile)
        if delimiter is not None:
            return _measure_table(stream, delimiter, size, gz)
        limit = _EXACT_COUNT_BYTES // (8 if gz else 1)
        if size <= limit:
            lines = text = 0
            carry = b""  # the start of a line whose end is in the next chunk
            for chunk in iter(lambda: stream.read(_BLOCK), b""):
                text += len(chunk)
                data = carry + chunk if carry else chunk
                end = data.rfind(b"\n") + 1
                lines += _non_blank(data, end)
                carry = data[end:]
            lines += 1 if carry.strip() else 0
            return InputSize(lines, text, True)
        sample = stream.read(_BLOCK)
        consumed = stream.fileobj.tell() if gz else len(sample)  # type: ignore[attr-defined]
    sample_lines = max(_non_blank(sample, sample.rfind(b"\n") + 1), 1)
    scale = size / max(consumed, 1)
    return InputSize(round(sample_lines * scale), round(len(sample) * scale), False)


class _CountingReader(io.RawIOBase):
    """Bytes read through it are counted (the text of a table, for the plan's token estimate)."""

    def __init__(self, binary: BinaryIO, limit: int | None) -> None:
        self._binary = binary
        self._left = limit  # None: read to the end
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = len(buffer) if self._left is None else min(len(buffer), self._left)
        data = self._binary.read(want) if want else b""
        buffer[: len(data)] = data
        self.count += len(data)
        if self._left is not None:
            self._left -= len(data)
        return len(data)


def _measure_table(binary: BinaryIO, delimiter: str, size: int, gz: bool) -> InputSize:
    whole = size <= _EXACT_TABLE_BYTES // (8 if gz else 1)
    counting = _CountingReader(binary, None if whole else _BLOCK)
    text = io.TextIOWrapper(io.BufferedReader(counting), encoding="utf-8-sig",
                            errors="surrogateescape", newline="")
    records, last_cut = _count_records(text, delimiter)
    if whole or counting.count < _BLOCK:  # the sample holds the whole file
        return InputSize(records, counting.count, True)
    # The sample ends anywhere: its last record is likely cut, so it is left out.
    records -= last_cut
    consumed = binary.fileobj.tell() if gz else counting.count  # type: ignore[attr-defined]
    scale = size / max(consumed, 1)
    return InputSize(max(round(records * scale), 1), round(counting.count * scale), False)


def _count_records(text: io.TextIOBase, delimiter: str) -> tuple[int, bool]:
    """The data rows ``TableReader.rows`` yields (header and blank rows left out), and whether the
    last row read was one of them."""
    if csv.field_size_limit() < _FIELD_LIMIT:
        csv.field_size_limit(_FIELD_LIMIT)
    reader = csv.reader(text, delimiter=delimiter)
    count = 0
    counted_last = False
    try:
        next(reader)  # the header
    except (StopIteration, csv.Error):
        return 0, False
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return count, counted_last
        except csv.Error:  # a bad row is one invalid_input record
            counted_last = True
        else:
            counted_last = any(v.strip() for v in values)
        count += counted_last


# A line end followed by a blank line (whitespace only): found with one attempt per line end.
_BEFORE_BLANK = re.compile(rb"\n(?=[ \t\r\f\v]*\n)")


def _non_blank(data: bytes, end: int) -> int:
    """How many of the newline-ended lines in ``data[:end]`` hold more than whitespace (the lines
    iter_lines yields); ``end`` is just after a line end. Counted in place, without a copy."""
    lines = data.count(b"\n", 0, end)
    if not lines:
        return 0
    first_blank = not data[: data.find(b"\n")].strip()
    return lines - first_blank - len(_BEFORE_BLANK.findall(data, 0, end))


def fingerprint(path: Path) -> str:
    """A content fingerprint that costs the same for 1 KB and 10 GB: size plus sampled blocks.

    It hashes the size, the first and last 64 KiB and 32 blocks of 4 KiB spread evenly between:
    any edit that changes the size or touches a sampled block is seen; an edit of equal length
    between samples is not (the manifest is a guard against mistakes, not against forgery).
    """
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= 256 * 1024:
            digest.update(f.read())
        else:
            offsets = [0, *(size * i // 33 for i in range(1, 33)), size - 65536]
            for offset in offsets:
                f.seek(offset)
                digest.update(f.read(65536 if offset in (0, size - 65536) else 4096))
    return "sha256-sampled:" + digest.hexdigest()[:32]

