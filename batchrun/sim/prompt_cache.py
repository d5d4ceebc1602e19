"""Implicit prompt caching, as OpenAI and Gemini do it, so cached-token billing can be tested.

A request whose leading messages (all but the last) reached the same model within the TTL reads
them from the cache: ``usage.prompt_tokens_details.cached_tokens`` says how many, in 128-token
blocks once the prefix is at least 1,024 tokens (OpenAI's rule), and they are billed at the
model's cache-read price. The first request with a prefix writes it and pays in full.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .replies import canonical_messages, prompt_tokens

__all__ = ["BLOCK_TOKENS", "MIN_CACHED_TOKENS", "TTL_S", "PromptCache"]

MIN_CACHED_TOKENS = 1024
BLOCK_TOKENS = 128
TTL_S = 300.0
_MAX_PREFIXES = 100_000  # the oldest are forgotten first: memory stays bounded


class PromptCache:
    def __init__(self, *, ttl_s: float = TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def cached_tokens(self, model_id: str, messages: Sequence[Mapping[str, Any]], n_prompt: int) -> int:
        """How many of this request's prompt tokens are read from the cache (and remember its prefix)."""
        if len(messages) < 2:
            return 0
        prefix = messages[:-1]
        key = hashlib.sha256(model_id.encode() + b"\0" + canonical_messages(prefix)).hexdigest()
        now = self._clock()
        with self._lock:
            last = self._seen.pop(key, None)
            self._seen[key] = now
            while len(self._seen) > _MAX_PREFIXES:
                self._seen.popitem(last=False)
        if last is None or now - last > self._ttl_s:
            return 0
        tokens = prompt_tokens(prefix)
        if tokens < MIN_CACHED_TOKENS:
            return 0
        return min(tokens // BLOCK_TOKENS * BLOCK_TOKENS, n_prompt)
