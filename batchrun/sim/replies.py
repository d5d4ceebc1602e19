"""Deterministic replies and token usage: the same messages and model always give the same answer."""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .catalog import Model

__all__ = [
    "Reply",
    "canonical_messages",
    "cost_parts",
    "make_reply",
    "message_text",
    "prompt_key",
    "prompt_tokens",
    "schema_instance",
    "text_tokens",
    "usage_json",
]

_VOCABULARY = (
    "the quick model reads each line and writes a careful answer about data quality while "
    "batches move through the queue under steady limits with retries that never pay twice "
    "for one request because every result is saved before the next line starts so restarts "
    "resume exactly where they stopped and the ledger agrees with the bill at the end"
)
_WORDS = tuple(_VOCABULARY.split())

_DEFAULT_LABELS = ("positive", "negative", "neutral")
# A slash-separated list of words such as "positive/negative/neutral"; URLs are filtered out below.
_LABEL_LIST = re.compile(
    r"(?<![\w/.:])([A-Za-z][A-Za-z_-]*(?:\s?/\s?[A-Za-z][A-Za-z_-]*){1,11})(?![\w/])"
)
_INPUT_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_REASONING_TOKENS = {"minimal": 8, "low": 16, "medium": 48, "high": 96, "xhigh": 160, "max": 256}


@dataclass(frozen=True, slots=True)
class Reply:
    """What the model 'said' and what it cost in tokens; completion_tokens include reasoning."""

    content: str
    reasoning: str | None
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str
    native_finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int = 0


def canonical_messages(messages: Sequence[Any]) -> bytes:
    """Serialise messages with sorted keys, so equal prompts hash equally whatever the key order."""
    return orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)


def prompt_key(messages: Sequence[Any]) -> str:
    """Return the sha256 hex of the canonical messages JSON (the ledger's prompt identity)."""
    return hashlib.sha256(canonical_messages(messages)).hexdigest()


def message_text(message: Mapping[str, Any]) -> str:
    """Return the text of one message: a plain string, or the text parts of a content list joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def text_tokens(text: str) -> int:
    """Estimate tokens as one per four characters, rounded up (the usual rule of thumb)."""
    return math.ceil(len(text) / 4)


def prompt_tokens(messages: Sequence[Mapping[str, Any]], tools: Any = None) -> int:
    """Estimate prompt tokens: ceil(chars/4) + 3 per message, images at 85, tool specs as text."""
    total = 0
    for m in messages:
        total += text_tokens(message_text(m)) + 3
        content = m.get("content")
        if isinstance(content, list):
            total += 85 * sum(
                1 for p in content if isinstance(p, dict) and p.get("type") == "image_url"
            )
        calls = m.get("tool_calls")
        if calls:
            total += text_tokens(orjson.dumps(calls).decode())
    if tools:
        total += text_tokens(orjson.dumps(tools).decode())
    return total


def cost_parts(model: Model, prompt: int, completion: int, cached: int = 0) -> tuple[float, float]:
    """Return (prompt cost, completion cost) in USD; reasoning is inside `completion`, and the
    `cached` prompt tokens cost the cache-read price."""
    cached = min(cached, prompt)
    prompt_cost = (prompt - cached) * model.prompt_price + cached * model.cache_read_price
    return prompt_cost, completion * model.completion_price


def usage_json(
    reply: Reply, model: Model, dialect: str, *, billed: bool = True, report_cost: bool = True
) -> dict[str, Any]:
    """Build the `usage` object in the dialect's shape; an unbilled reply reports cost 0.

    ``report_cost=False`` sends OpenRouter's usage with ``cost: null``, as its schema allows.
    """
    total = reply.prompt_tokens + reply.completion_tokens
    if dialect == "plain":
        return {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": total,
        }
    if dialect == "openai":
        return {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": total,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reply.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
    pc, cc = cost_parts(model, reply.prompt_tokens, reply.completion_tokens, reply.cached_tokens)
    if not billed:
        pc = cc = 0.0
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": total,
        "cost": pc + cc if report_cost else None,
        "is_byok": False,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reply.reasoning_tokens,
            "image_tokens": 0,
        },
        "cost_details": {
            "upstream_inference_cost": None,
            "upstream_inference_prompt_cost": pc,
            "upstream_inference_completions_cost": cc,
        },
    }


# -- reply text -----------------------------------------------------------------------------


def _sentence(rng: random.Random, words: Sequence[str], lo: int = 7, hi: int = 13) -> str:
    picked = [rng.choice(words) for _ in range(rng.randint(lo, hi))]
    text = " ".join(picked)
    return text[0].upper() + text[1:] + "."


def _labels(text: str) -> tuple[str, ...] | None:
    for match in _LABEL_LIST.finditer(text):
        parts = tuple(p.strip() for p in match.group(1).split("/"))
        if all(0 < len(p) <= 24 for p in parts) and "http" not in match.group(1).lower():
            return parts
    if "label" in text.lower():
        return _DEFAULT_LABELS
    return None


def _base_text(rng: random.Random, last_user: str) -> str:
    labels = _labels(last_user)
    if labels:
        return rng.choice(labels)
    if "summar" in last_user.lower():
        words = _INPUT_WORD.findall(last_user) or list(_WORDS)
        return " ".join(_sentence(rng, words, 6, 12) for _ in range(rng.randint(1, 3)))
    return _sentence(rng, _WORDS)


def schema_instance(schema: Any, rng: random.Random, root: Any = None, depth: int = 0) -> Any:
    """Generate a small JSON value that conforms to a JSON schema (the subset structured output uses)."""
    root = schema if root is None else root
    if depth > 12 or not isinstance(schema, dict):
        return None if depth > 12 else "sim"
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return schema_instance(target, rng, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return schema_instance((non_null or options)[0], rng, root, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                merged.update(part)
        return schema_instance(merged, rng, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        out = {k: schema_instance(v, rng, root, depth + 1) for k, v in props.items()}
        for k in schema.get("required") or ():
            out.setdefault(k, "sim")
        return out
    if kind == "array":
        n = max(1, int(schema.get("minItems", 1)))
        if schema.get("maxItems") == 0:
            n = 0
        return [schema_instance(schema.get("items", {}), rng, root, depth + 1) for _ in range(n)]
    if kind == "integer":
        lo = int(schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1))
        hi = int(schema.get("maximum", schema.get("exclusiveMaximum", lo + 101) - 1))
        return rng.randint(lo, max(lo, hi))
    if kind == "number":
        lo_f = float(schema.get("minimum", schema.get("exclusiveMinimum")) or 0.0)
        hi_f = float(schema.get("maximum", schema.get("exclusiveMaximum")) or lo_f + 100.0)
        return round(lo_f + (hi_f - lo_f) * rng.random(), 3)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _schema_string(schema, rng)


def _schema_string(schema: Mapping[str, Any], rng: random.Random) -> str:
    fmt = schema.get("format")
    fixed = {
        "date-time": "2025-01-01T00:00:00Z",
        "date": "2025-01-01",
        "time": "00:00:00",
        "email": "sim@example.com",
        "uri": "https://example.com/sim",
        "uuid": "00000000-0000-4000-8000-000000000000",
    }
    if fmt in fixed:
        return fixed[fmt]
    text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
    min_len = int(schema.get("minLength", 0))
    if len(text) < min_len:
        text = (text + " ") * (min_len // max(1, len(text)) + 1)
    max_len = schema.get("maxLength")
    return text[: int(max_len)] if max_len is not None else text.strip() if min_len == 0 else text


def _reasoning_budget(body: Mapping[str, Any]) -> int:
    reasoning = body.get("reasoning")
    effort = body.get("reasoning_effort")
    if isinstance(reasoning, dict):
        if reasoning.get("enabled") is False or reasoning.get("effort") == "none":
            return 0
        if isinstance(reasoning.get("max_tokens"), int):
            return max(0, min(int(reasoning["max_tokens"]), 256))
        return _REASONING_TOKENS.get(str(reasoning.get("effort", "medium")), 48)
    if isinstance(effort, str) and effort != "none":
        return _REASONING_TOKENS.get(effort, 48)
    return 48 if body.get("include_reasoning") is True else 0


def _pick_tool(tools: Sequence[Any], choice: Any) -> Mapping[str, Any] | None:
    fns = [
        t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        for fn in fns:
            if fn.get("name") == wanted:
                found: Mapping[str, Any] = fn
                return found
    return fns[0] if fns else None


def _cut_at_stop(text: str, stop: Any) -> str:
    stops = [stop] if isinstance(stop, str) else [s for s in stop or () if isinstance(s, str)]
    cut = len(text)
    for s in stops:
        i = text.find(s) if s else -1
        if 0 <= i < cut:
            cut = i
    return text[:cut]


def make_reply(
    body: Mapping[str, Any], messages: Sequence[Mapping[str, Any]], model: Model, n_prompt: int
) -> Reply:
    """Compute the deterministic reply to a validated request body for `model`."""
    digest = hashlib.sha256(model.id.encode() + b"\0" + canonical_messages(messages)).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    last_user = next(
        (message_text(m) for m in reversed(messages) if m.get("role") == "user"),
        message_text(messages[-1]),
    )
    cap = body.get("max_completion_tokens", body.get("max_tokens"))
    cap = cap if isinstance(cap, int) and cap > 0 else None
    native_stop, native_length = model.native_stop

    reasoning_tokens = _reasoning_budget(body) if model.reasoning else 0
    if cap is not None:
        reasoning_tokens = min(reasoning_tokens, cap)
    reasoning_text = None
    if reasoning_tokens:
        reasoning_text = _sentence(rng, _WORDS, 4, 8)
        reasoning_text = (reasoning_text + " ") * (reasoning_tokens * 4 // len(reasoning_text) + 1)
        reasoning_text = reasoning_text[: reasoning_tokens * 4]
        if isinstance(body.get("reasoning"), dict) and body["reasoning"].get("exclude"):
            reasoning_text = None
    room = None if cap is None else cap - reasoning_tokens

    tools = body.get("tools")
    tool_choice = body.get("tool_choice")
    if isinstance(tools, list) and tools and tool_choice != "none":
        fn = _pick_tool(tools, tool_choice)
        if fn is not None:
            args = orjson.dumps(schema_instance(fn.get("parameters") or {}, rng)).decode()
            name = str(fn.get("name", "tool"))
            call = {
                "id": "call_" + digest.hex()[:24],
                "index": 0,
                "type": "function",
                "function": {"name": name, "arguments": args},
            }
            used = text_tokens(name + args)
            native = native_stop if model.tokenizer == "Gemini" else "tool_calls"
            return Reply(
                "",
                reasoning_text,
                [call],
                "tool_calls",
                native,
                n_prompt,
                used + reasoning_tokens,
                reasoning_tokens,
            )

    base = _base_text(rng, last_user)
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema", {}) if isinstance(spec, dict) else {}
        content = orjson.dumps(schema_instance(schema, rng)).decode()
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        content = orjson.dumps({"answer": base}).decode()
    else:
        content = base
    content = _cut_at_stop(content, body.get("stop"))

    finish, native = "stop", native_stop
    if room is not None and text_tokens(content) > room:
        content = content[: room * 4]
        finish, native = "length", native_length
    return Reply(
        content,
        reasoning_text,
        None,
        finish,
        native,
        n_prompt,
        text_tokens(content) + reasoning_tokens,
        reasoning_tokens,
    )
