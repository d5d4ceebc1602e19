"""Grouping and splitting into batches, counted on the bytes actually sent (pure)."""

from __future__ import annotations

import orjson
import pytest

from batchrun.batch.plan import (
    NONCE_LENGTH,
    BatchItem,
    BatchLimits,
    Splitter,
    group_key,
    openai_line,
    openrouter_item,
    openrouter_payload,
    wire_id,
)

NONCE = "a" * NONCE_LENGTH


def _item(i: int, model: str = "m/x", size: int = 10) -> BatchItem:
    body = orjson.dumps({"messages": [{"role": "user", "content": "x" * size}]})
    return BatchItem(f"id{i}", i + 1, body, model)


def _wire(api: str, model: str, items: list[BatchItem]) -> bytes:
    if api == "openai":
        return b"".join(openai_line(wire_id(NONCE, i), it.body) for i, it in enumerate(items))
    return openrouter_payload(model, [openrouter_item(wire_id(NONCE, i), it.body) for i, it in enumerate(items)])


@pytest.mark.parametrize(("model", "body", "key"), [
    ("openai/gpt-4o", {"response_format": {"type": "json_object"}}, ("openai/gpt-4o", "")),
    ("google/gemini-2.0-flash-lite-001", {}, ("google/gemini-2.0-flash-lite-001", "")),
    ("google/gemini-2.0-flash-lite-001", {"response_format": {"type": "json_object"}},
     ("google/gemini-2.0-flash-lite-001", '{"type":"json_object"}')),
    ("google/g", {"response_format": {"b": 1, "a": 2}}, ("google/g", '{"a":2,"b":1}')),
])
def test_group_key(model: str, body: dict, key: tuple[str, str]) -> None:
    assert group_key(model, body) == key


@pytest.mark.parametrize("api", ["openrouter", "openai"])
@pytest.mark.parametrize(("n", "max_requests", "max_bytes", "sizes"), [
    (25, 10, 10**9, [10, 10, 5]),
    (10, 10, 10**9, [10]),
    (1, 5000, 10**9, [1]),
    (12, 5000, None, None),  # max_bytes set from the measured size of 5 requests below
])
def test_split_counts_and_bytes(api: str, n: int, max_requests: int, max_bytes: int | None,
                                sizes: list[int] | None) -> None:
    items = [_item(i) for i in range(n)]
    if max_bytes is None:
        max_bytes = len(_wire(api, "m/x", items[:5]))  # exactly five fit, a sixth does not
        sizes = [5, 5, 2]
    splitter = Splitter(api, BatchLimits(max_requests, max_bytes))
    chunks = [c for it in items if (c := splitter.add(("m/x", ""), it)) is not None]
    chunks += list(splitter.flush())
    assert [len(c.items) for c in chunks] == sizes
    for chunk in chunks:
        sent = _wire(api, "m/x", chunk.items)
        assert chunk.size == len(sent)  # the count is the bytes that go on the wire
        assert chunk.size <= max_bytes


def test_models_and_formats_never_share_a_batch() -> None:
    splitter = Splitter("openrouter", BatchLimits(100, 10**9))
    for i in range(6):
        model = "a/one" if i % 2 else "google/two"
        splitter.add(group_key(model, {"response_format": {"type": "json_object"}} if i % 3 == 0 else {}),
                     _item(i, model))
    chunks = list(splitter.flush())
    assert {(c.key, len(c.items)) for c in chunks} == {
        (("a/one", ""), 3), (("google/two", '{"type":"json_object"}'), 1), (("google/two", ""), 2),
    }
    assert all(len({it.model for it in c.items}) == 1 for c in chunks)


def test_openrouter_payload_puts_endpoint_and_model_first() -> None:
    payload = openrouter_payload("m/x", [openrouter_item(wire_id(NONCE, 0), b'{"messages":[]}')])
    keys = list(orjson.loads(payload))
    assert keys[:2] == ["endpoint", "model"] and keys[-1] == "requests"


def test_too_big_alone() -> None:
    splitter = Splitter("openai", BatchLimits(10, 200))
    assert splitter.fits_alone(_item(0, size=10))
    assert not splitter.fits_alone(_item(1, size=500))


def test_wire_ids_fit_every_providers_rule() -> None:
    import re

    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", wire_id("0123456789ab", 49_999))
