"""Success-path documents in OpenRouter's shape: completion bodies and streaming chunks."""

from __future__ import annotations

import hashlib
import random
import string
from typing import Any

from .catalog import Model
from .replies import Reply

__all__ = [
    "chunk_doc",
    "completion_doc",
    "error_chunk_doc",
    "fingerprint",
    "new_gen_id",
    "split_pieces",
    "usage_chunk_doc",
]

_ALNUM = string.ascii_letters + string.digits
# Ids only need to be unique, not reproducible, so they do not touch the seeded fault RNG.
_ID_RNG = random.Random()


def new_gen_id(now: float) -> str:
    """Return a fresh generation id, `gen-<unix>-<20 alnum>`."""
    return f"gen-{int(now)}-{''.join(_ID_RNG.choices(_ALNUM, k=20))}"


def fingerprint(model: Model) -> str | None:
    """Return the system fingerprint OpenAI and Azure report (wire §6); other providers send null."""
    if model.provider not in ("OpenAI", "Azure"):
        return None
    return "fp_" + hashlib.sha256(model.id.encode()).hexdigest()[:10]


def _message(reply: Reply, dialect: str, content: str | None) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "role": "assistant",
        "content": reply.content if content is None else content,
        "refusal": None,
    }
    if dialect != "openai":
        msg["reasoning"] = reply.reasoning
    if reply.tool_calls:
        msg["tool_calls"] = reply.tool_calls
    return msg


def completion_doc(
    gen_id: str,
    created: int,
    model: Model,
    reply: Reply,
    usage: dict[str, Any],
    dialect: str,
    *,
    content: str | None = None,
    choice_error: dict[str, Any] | None = None,
    empty: bool = False,
) -> dict[str, Any]:
    """Build a chat.completion body; `choice_error` makes it a finish_reason "error" answer."""
    doc: dict[str, Any] = {
        "id": gen_id,
        "object": "chat.completion",
        "created": created,
        "model": model.id,
    }
    if dialect == "openrouter":
        doc["provider"] = model.provider
    doc["system_fingerprint"] = fingerprint(model)
    choices: list[dict[str, Any]] = []
    if not empty:
        choice: dict[str, Any] = {
            "index": 0,
            "logprobs": None,
            "finish_reason": "error" if choice_error else reply.finish_reason,
        }
        if dialect == "openrouter":
            choice["native_finish_reason"] = "error" if choice_error else reply.native_finish_reason
        choice["message"] = _message(reply, dialect, content)
        if choice_error:
            choice["error"] = choice_error
        choices.append(choice)
    doc["choices"] = choices
    doc["usage"] = usage
    return doc


def _chunk_head(gen_id: str, created: int, model: Model, dialect: str) -> dict[str, Any]:
    head: dict[str, Any] = {"id": gen_id}
    if dialect == "openrouter":
        head["provider"] = model.provider
    head.update(model=model.id, object="chat.completion.chunk", created=created)
    return head


def chunk_doc(
    gen_id: str,
    created: int,
    model: Model,
    dialect: str,
    delta: dict[str, Any],
    finish: str | None = None,
    native: str | None = None,
) -> dict[str, Any]:
    """Build one streaming delta chunk."""
    doc = _chunk_head(gen_id, created, model, dialect)
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
    if dialect == "openrouter":
        choice["native_finish_reason"] = native
    choice["logprobs"] = None
    doc["choices"] = [choice]
    doc["system_fingerprint"] = fingerprint(model)
    return doc


def usage_chunk_doc(
    gen_id: str, created: int, model: Model, dialect: str, usage: dict[str, Any]
) -> dict[str, Any]:
    """Build the last data chunk: no choices, only usage."""
    doc = _chunk_head(gen_id, created, model, dialect)
    doc["choices"] = []
    doc["system_fingerprint"] = fingerprint(model)
    doc["usage"] = usage
    return doc


def error_chunk_doc(
    gen_id: str, created: int, model: Model, dialect: str, error: dict[str, Any]
) -> dict[str, Any]:
    """Build the mid-stream error chunk after which the stream ends (wire §1(c))."""
    doc = _chunk_head(gen_id, created, model, dialect)
    doc["error"] = error
    doc["choices"] = [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]
    return doc


def split_pieces(text: str, parts: int = 4) -> list[str]:
    """Split text into up to `parts` pieces at spaces, keeping every character."""
    if not text:
        return []
    step = max(1, len(text) // parts)
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + step)
        space = text.find(" ", end)
        end = len(text) if space < 0 or len(pieces) == parts - 1 else space + 1
        pieces.append(text[start:end])
        start = end
    return pieces
