"""The simulator's implicit prompt cache: which requests read cached tokens, and how many."""

from __future__ import annotations

import pytest

from batchrun.sim.prompt_cache import BLOCK_TOKENS, MIN_CACHED_TOKENS, TTL_S, PromptCache
from batchrun.sim.replies import prompt_tokens

LONG = {"role": "system", "content": "rules " * 1200}  # ~1,800 tokens
SHORT = {"role": "system", "content": "be brief"}


def ask(text: str, system: dict = LONG) -> list[dict]:
    return [system, {"role": "user", "content": text}]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("calls", "cached"),
    [
        # (model, messages, seconds later) ... -> cached tokens of the last call
        ([("m", ask("a"), 0)], 0),  # a first request writes the cache, reads nothing
        ([("m", ask("a"), 0), ("m", ask("b"), 1)], "prefix"),  # same prefix, other question
        ([("m", ask("a"), 0), ("other", ask("b"), 1)], 0),  # caches are per model
        ([("m", ask("a"), 0), ("m", ask("b"), TTL_S + 1)], 0),  # expired
        ([("m", ask("a", SHORT), 0), ("m", ask("b", SHORT), 1)], 0),  # prefix under 1,024 tokens
        ([("m", [{"role": "user", "content": "x" * 9000}], 0),
          ("m", [{"role": "user", "content": "x" * 9000}], 1)], 0),  # no prefix: one message
    ],
)
def test_cached_tokens(calls: list, cached: object) -> None:
    clock = Clock()
    cache = PromptCache(clock=clock)
    got = 0
    for model, messages, later in calls:
        clock.now += later
        got = cache.cached_tokens(model, messages, prompt_tokens(messages))
    if cached == "prefix":
        prefix = prompt_tokens([LONG])
        assert prefix >= MIN_CACHED_TOKENS
        assert got == prefix // BLOCK_TOKENS * BLOCK_TOKENS
    else:
        assert got == cached
