"""The simulator's own RPM/TPM enforcement: a sliding window over admitted requests."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["RateDecision", "RateWindow"]


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Outcome of an admission check; `wait_s` says when a refused request would fit."""

    allowed: bool
    kind: str = ""  # "requests" or "tokens" when refused
    limit: int = 0
    wait_s: float = 0.0


class RateWindow:
    """At most `rpm*w/60` requests and `tpm*w/60` tokens in any window of `w` seconds."""

    def __init__(self, rpm: float | None, tpm: float | None, window_s: float) -> None:
        self.window_s = window_s
        self.max_requests = None if rpm is None else max(1, math.floor(rpm * window_s / 60 + 1e-9))
        self.max_tokens = None if tpm is None else max(1, math.floor(tpm * window_s / 60 + 1e-9))
        self._events: deque[tuple[float, int]] = deque()
        self._tokens = 0

    @property
    def enabled(self) -> bool:
        """Whether any limit is set."""
        return self.max_requests is not None or self.max_tokens is not None

    def reset(self) -> None:
        """Forget every admitted request."""
        self._events.clear()
        self._tokens = 0

    def _expire(self, now: float) -> None:
        # Half-open windows [t, t + w): an event exactly w old no longer counts (the epsilon keeps
        # float noise from refusing a client that waited exactly the Retry-After it was given).
        edge = now - self.window_s + 1e-9
        events = self._events
        while events and events[0][0] <= edge:
            self._tokens -= events.popleft()[1]

    def admit(self, now: float, tokens: int) -> RateDecision:
        """Admit and record a request of `tokens` at `now`, or refuse it without recording."""
        if not self.enabled:
            return RateDecision(True)
        self._expire(now)
        events = self._events
        if self.max_requests is not None and len(events) >= self.max_requests:
            # The slot frees when enough of the oldest events leave the window.
            oldest = events[len(events) - self.max_requests][0]
            return RateDecision(False, "requests", self.max_requests, oldest + self.window_s - now)
        # A request bigger than the whole budget could never fit; let it through alone.
        if self.max_tokens is not None and events and self._tokens + tokens > self.max_tokens:
            freed = 0
            wait = self.window_s
            for t, n in events:
                freed += n
                if self._tokens - freed + tokens <= self.max_tokens:
                    wait = t + self.window_s - now
                    break
            return RateDecision(False, "tokens", self.max_tokens, wait)
        events.append((now, tokens))
        self._tokens += tokens
        return RateDecision(True)

    def remaining(self, now: float) -> tuple[int | None, int | None, float, float]:
        """Return (requests left, tokens left, seconds until a request slot frees, until all tokens)."""
        self._expire(now)
        events = self._events
        req_left = None if self.max_requests is None else max(0, self.max_requests - len(events))
        tok_left = None if self.max_tokens is None else max(0, self.max_tokens - self._tokens)
        first = events[0][0] + self.window_s - now if events else 0.0
        last = events[-1][0] + self.window_s - now if events else 0.0
        return req_left, tok_left, max(0.0, first), max(0.0, last)
