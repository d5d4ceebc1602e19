"""Deterministic JSONL inputs: one chat request per line, prompts padded to a chosen size."""

from __future__ import annotations

from pathlib import Path

import orjson

__all__ = ["make_input"]

_WORDS = (
    b"alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    b"oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu "
)
_BATCH = 10_000


def _prompt(number: int, size: int) -> str:
    """Line ``number``'s prompt: a fixed lead, its number, then filler words up to ``size`` bytes."""
    lead = b"Summarize item %d in one word: " % number
    if len(lead) >= size:
        return lead.decode()
    filler = (_WORDS * (size // len(_WORDS) + 1))[: size - len(lead)]
    return (lead + filler).decode()


def make_input(folder: Path, lines: int, prompt_bytes: int = 60) -> Path:
    """Write (or reuse) ``lines`` requests with ``prompt_bytes``-byte prompts; return the path."""
    path = folder / f"input-{lines}-{prompt_bytes}.jsonl"
    if path.exists():
        return path
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as out:
        for start in range(1, lines + 1, _BATCH):
            chunk = [
                orjson.dumps(
                    {
                        "custom_id": f"r{n}",
                        "messages": [{"role": "user", "content": _prompt(n, prompt_bytes)}],
                        "max_tokens": 16,
                    },
                    option=orjson.OPT_APPEND_NEWLINE,
                )
                for n in range(start, min(start + _BATCH, lines + 1))
            ]
            out.write(b"".join(chunk))
    partial.rename(path)
    return path
