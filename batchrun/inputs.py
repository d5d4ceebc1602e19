"""Stream an input file line by line (plain or gzip), and size it up quickly for the plan line."""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from batchrun.errors import ConfigError

__all__ = ["InputSize", "fingerprint", "iter_lines", "measure", "open_input"]

_GZIP_MAGIC = b"\x1f\x8b"
# Below this size the plan line counts lines exactly; above it, it estimates from a sample so
# that the first request is not held back by a scan that grows with the input.
_EXACT_COUNT_BYTES = 64 * 1024 * 1024
_BLOCK = 1024 * 1024


def open_input(path: Path) -> BinaryIO:
    """Open the input for reading bytes, decompressing gzip; a clear error if it cannot be read."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise ConfigError(f"input file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"input is a folder, not a file: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read input {path}: {exc.strerror}") from None
    if raw.peek(2)[:2] == _GZIP_MAGIC:
        raw.close()  # a GzipFile given a fileobj never closes it: let gzip own the file instead
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return raw


def iter_lines(stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, line without its line end) for every non-blank line."""
    try:
        for number, line in enumerate(stream, 1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield number, line
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ConfigError(f"cannot read input: {exc}") from None


@dataclass(frozen=True, slots=True)
class InputSize:
    """How many lines the input has (or about how many) and their bytes, for the plan line."""

    lines: int
    text_bytes: int
    exact: bool


def measure(path: Path) -> InputSize:
    """Count non-blank lines, exactly for small files, from a 1 MiB sample for large ones."""
    size = os.path.getsize(path)
    with open_input(path) as stream:
        gz = isinstance(stream, gzip.GzipFile)
        limit = _EXACT_COUNT_BYTES // (8 if gz else 1)
        if size <= limit:
            lines = text = 0
            for chunk in iter(lambda: stream.read(_BLOCK), b""):
                text += len(chunk)
                lines += chunk.count(b"\n")
            if text and not chunk.endswith(b"\n"):
                lines += 1
            return InputSize(lines, text, True)
        sample = stream.read(_BLOCK)
        consumed = stream.fileobj.tell() if gz else len(sample)  # type: ignore[attr-defined]
    sample_lines = max(sample.count(b"\n"), 1)
    scale = size / max(consumed, 1)
    return InputSize(round(sample_lines * scale), round(len(sample) * scale), False)


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

