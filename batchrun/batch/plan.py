"""Group requests into batches and split them at the provider's caps, counted on the wire bytes.

Both Batch APIs take one model per batch; OpenRouter also wants every request to a Google model
in one batch to share one ``response_format`` (docs/batch-wire.md A3.6). Caps: 5,000 requests and
200 MB on OpenRouter, 50,000 and 200 MB on OpenAI (A3.5, B2). The size counted is that of the
bytes actually sent: the whole POST body on OpenRouter (its ``requests`` array and envelope), the
JSONL file on OpenAI. Pure: items in, chunks out, no I/O and no clock.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "ENDPOINT",
    "NONCE_LENGTH",
    "OPENAI_LIMITS",
    "OPENROUTER_LIMITS",
    "BatchItem",
    "BatchLimits",
    "Chunk",
    "Splitter",
    "group_key",
    "openai_line",
    "openrouter_item",
    "openrouter_payload",
    "wire_id",
]

ENDPOINT = "/v1/chat/completions"
NONCE_LENGTH = 12  # hex characters: wire ids are "<nonce>-<index>", within [A-Za-z0-9_-]{1,64}


@dataclass(frozen=True)
class BatchLimits:
    """The most requests and bytes one batch may hold."""

    max_requests: int
    max_bytes: int


# 200 MB read as 200 * 10**6 bytes: the smaller of the two readings, so a batch never exceeds either.
OPENROUTER_LIMITS = BatchLimits(5_000, 200_000_000)
OPENAI_LIMITS = BatchLimits(50_000, 200_000_000)


@dataclass(slots=True)
class BatchItem:
    """One request on its way into a batch: its input id, line, wire body and attempts so far."""

    custom_id: str
    line: int
    body: bytes  # the request body as it goes on the wire (OpenRouter: without model)
    model: str
    attempts: int = 0  # attempts that ran before this submission
    metadata: Any = None
    worst_usd: float = 0.0  # its worst case at the batch price (0 when no budget is kept)
    billed_usd: float = 0.0  # what earlier attempts of it cost


@dataclass
class Chunk:
    """The requests of one future batch: one model (and one response_format for Google models)."""

    key: tuple[str, str]
    model: str
    items: list[BatchItem] = field(default_factory=list)
    size: int = 0  # bytes on the wire, envelope included

    @property
    def worst_usd(self) -> float:
        return sum(item.worst_usd for item in self.items)


def group_key(model: str, body: Mapping[str, Any]) -> tuple[str, str]:
    """The batch a request belongs to: its model, plus its response_format for a Google model."""
    if not model.startswith("google/"):
        return (model, "")
    response_format = body.get("response_format")
    if response_format is None:
        return (model, "")
    return (model, orjson.dumps(response_format, option=orjson.OPT_SORT_KEYS).decode())


def wire_id(nonce: str, index: int) -> str:
    """The custom_id a request carries on the wire: the submission's nonce and its index."""
    return f"{nonce}-{index}"


_OR_ITEM_HEAD = b'{"custom_id":"'
_OR_ITEM_MID = b'","body":'
_OR_ITEM_TAIL = b"}"
_OAI_LINE_HEAD = b'{"custom_id":"'
_OAI_LINE_MID = b'","method":"POST","url":"' + ENDPOINT.encode() + b'","body":'
_OAI_LINE_TAIL = b"}\n"


def openrouter_item(wire: str, body: bytes) -> bytes:
    """One element of OpenRouter's ``requests`` array."""
    return _OR_ITEM_HEAD + wire.encode() + _OR_ITEM_MID + body + _OR_ITEM_TAIL


def _openrouter_head(model: str) -> bytes:
    # endpoint and model must come before requests: OpenRouter stream-parses the body (A3.2).
    return (
        b'{"endpoint":"' + ENDPOINT.encode() + b'","model":' + orjson.dumps(model)
        + b',"completion_window":"24h","requests":['
    )


_OR_PAYLOAD_TAIL = b"]}"


def openrouter_payload(model: str, items: list[bytes]) -> bytes:
    """The POST /batches body, keys in the order OpenRouter requires."""
    return _openrouter_head(model) + b",".join(items) + _OR_PAYLOAD_TAIL


def openai_line(wire: str, body: bytes) -> bytes:
    """One line of an OpenAI batch input file."""
    return _OAI_LINE_HEAD + wire.encode() + _OAI_LINE_MID + body + _OAI_LINE_TAIL


def _item_size(api: str, index: int, body: bytes) -> int:
    wire_length = NONCE_LENGTH + 1 + len(str(index))
    if api == "openai":
        return len(_OAI_LINE_HEAD) + wire_length + len(_OAI_LINE_MID) + len(body) + len(_OAI_LINE_TAIL)
    separator = 1 if index else 0  # the comma before every element but the first
    return separator + len(_OR_ITEM_HEAD) + wire_length + len(_OR_ITEM_MID) + len(body) + len(_OR_ITEM_TAIL)


def _envelope_size(api: str, model: str) -> int:
    return 0 if api == "openai" else len(_openrouter_head(model)) + len(_OR_PAYLOAD_TAIL)


class Splitter:
    """Collects items per batch key; hands out a chunk as soon as the next item would overflow it."""

    def __init__(self, api: str, limits: BatchLimits) -> None:
        self.api = api
        self.limits = limits
        self._open: dict[tuple[str, str], Chunk] = {}

    def fits_alone(self, item: BatchItem) -> bool:
        """Whether the item is small enough to be a batch by itself."""
        return _envelope_size(self.api, item.model) + _item_size(self.api, 0, item.body) \
            <= self.limits.max_bytes

    def add(self, key: tuple[str, str], item: BatchItem) -> Chunk | None:
        """Put ``item`` in its key's chunk; return the chunk it closed, if adding it closed one.

        An item that does not fit even alone (see ``fits_alone``) must not be added.
        """
        chunk = self._open.get(key)
        closed = None
        if chunk is not None:
            size = _item_size(self.api, len(chunk.items), item.body)
            if len(chunk.items) >= self.limits.max_requests or chunk.size + size > self.limits.max_bytes:
                closed = chunk
                chunk = None
        if chunk is None:
            chunk = Chunk(key, item.model, size=_envelope_size(self.api, item.model))
            self._open[key] = chunk
        chunk.size += _item_size(self.api, len(chunk.items), item.body)
        chunk.items.append(item)
        return closed

    def flush(self) -> Iterator[Chunk]:
        """The chunks still open, in the order their keys were first seen; the splitter is emptied."""
        chunks, self._open = list(self._open.values()), {}
        yield from chunks
