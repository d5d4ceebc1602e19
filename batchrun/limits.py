"""Rate and concurrency limits: smooth, adjustable at run time, with reserve/settle, on an injected clock.

Why our own: aiolimiter's ``AsyncLimiter(rpm, 60)`` lets a whole minute's quota through at t=0,
and ``AsyncLimiter(1, 60/rpm)`` refuses weighted acquires and cannot refund or change its rate.
``RateLimiter`` is a GCRA (virtual scheduling) limiter: each reservation pushes a "theoretical
arrival time" forward by ``amount / rate``, so requests are spaced evenly, a token estimate can be
settled against the real usage afterwards, and the rate can change while requests wait.

``AdaptiveLimits`` closes the loop (AIMD): a 429 halves the concurrency window and the request rate
and pauses the whole pool until the server's reset; successes recover both additively. Configured
limits stay the ceiling.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Callable

__all__ = ["AdaptiveLimits", "ConcurrencyGate", "RateLimiter"]

Clock = Callable[[], float]


class RateLimiter:
    """Spread reservations evenly at ``rate`` units per second; ``burst`` units may go at once."""

    def __init__(self, rate: float | None, *, burst: float = 1.0, clock: Clock = time.monotonic):
        self._clock = clock
        self._burst = burst
        self._tat = -math.inf  # theoretical arrival time of the next unit
        self.rate = rate

    @property
    def rate(self) -> float | None:
        return self._rate

    @rate.setter
    def rate(self, rate: float | None) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive or None")
        self._rate = rate

    def reserve(self, amount: float = 1.0, *, not_before: float = -math.inf) -> float:
        """Book ``amount`` units and return how many seconds the caller must wait before using them.

        ``not_before`` (a clock time) starts the booking no earlier: requests booked during a
        pause then leave one by one after it, rather than all together when it ends.
        """
        if self._rate is None:
            return 0.0
        now = self._clock()
        tolerance = self._burst / self._rate
        start = max(self._tat, now - tolerance, not_before)
        # Wait until ``amount`` (at most a whole burst, so a larger one still passes alone) is free.
        delay = max(start + min(amount, self._burst) / self._rate - now, 0.0)
        self._tat = start + amount / self._rate
        return delay

    def settle(self, reserved: float, actual: float) -> None:
        """Correct an earlier reservation with the amount really used (a refund when it was less)."""
        if self._rate is not None and self._tat != -math.inf:
            self._tat += (actual - reserved) / self._rate


class ConcurrencyGate:
    """A semaphore whose limit can change while tasks wait on it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self.active < self.limit and not self._waiters:
            self.active += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # we were woken and counted, but will not use the slot
            elif waiter in self._waiters:  # a release may already have dropped it, cancelled
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.active -= 1
        self._wake()

    def set_limit(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.active < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)


class AdaptiveLimits:
    """The pool-wide limits: configured ceilings, lowered when the server says we are over its
    limit, recovered gradually on successes.

    A single 429 is not a signal: providers shed load at random ("temporarily rate-limited
    upstream"), and halving on each one collapses throughput (measured: 2 % random 429s took a
    5,000-request job from 4 s to 330 s). The pool slows down only when the server marks the 429 as
    its own limit (``X-RateLimit-Remaining: 0``, an in-flight 402) or when more than
    ``over_limit_share`` of recent answers are 429s. It then pauses for the server's hint and sets
    the request rate just under the rate the server was accepting, instead of halving step by step.
    """

    over_limit_share = 0.05
    backoff_factor = 0.9  # of the accepted rate, when over the limit
    window_decrease = 0.75
    min_rate = 0.1  # requests per second; never throttle to a full stop
    decrease_cooldown_s = 1.0
    recent = 50  # answers over which the share of 429s is taken
    rpm_margin = 0.98
    recovery_per_success = 0.05  # req/s added per success: +5 % of the rate per second
    # Near the rate at which the server last said no, recovery slows to a probe, so the pool
    # sits just under an unknown limit instead of sawing between 90 % and 100 % of it.
    near_ceiling = 0.95
    probe_per_success = 0.01
    forget_ceiling = 1.1  # this far above it without a 429, the limit has moved: recover fast again
    episode_s = 10.0  # cuts this close together answer one limit: the ceiling keeps the highest

    def __init__(
        self,
        *,
        concurrency: int,
        rpm: float | None = None,
        tpm: float | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._clock = clock
        self.max_concurrency = concurrency
        # 2 % under the ceiling, with no burst: a server that counts in a strict sliding window
        # must never see one request too many because of scheduling jitter.
        self.max_rate = rpm / 60.0 * self.rpm_margin if rpm else None
        self.gate = ConcurrencyGate(concurrency)
        self.requests = RateLimiter(self.max_rate, burst=0.0, clock=clock)
        # One second's worth of tokens may go at once; a single larger request still passes alone.
        self.tokens = RateLimiter(tpm / 60.0 if tpm else None, burst=(tpm or 0) / 60.0, clock=clock)
        self.paused_until = -math.inf
        self._window = float(concurrency)
        self._last_decrease = -math.inf
        self._answers: collections.deque[bool] = collections.deque(maxlen=self.recent)  # True: 429
        self._limited = 0
        self._successes: collections.deque[float] = collections.deque(maxlen=2048)
        self._ceiling: float | None = None  # the request rate the server last refused

    def reserve(self, tokens: float) -> float:
        """Book one request of ``tokens`` estimated tokens; return the seconds to wait before sending."""
        now = self._clock()
        wait = max(self.requests.reserve(1.0, not_before=self.paused_until), self.tokens.reserve(tokens))
        return max(wait, self.paused_until - now)

    def settle(self, reserved_tokens: float, actual_tokens: float) -> None:
        self.tokens.settle(reserved_tokens, actual_tokens)

    def _record(self, limited: bool) -> None:
        if len(self._answers) == self._answers.maxlen and self._answers[0]:
            self._limited -= 1
        self._answers.append(limited)
        self._limited += limited

    def on_success(self) -> None:
        now = self._clock()
        self._record(False)
        self._successes.append(now)
        if self._window < self.max_concurrency:
            self._window = min(self.max_concurrency, self._window + 1.0 / self._window)
            self.gate.set_limit(int(self._window))
        rate = self.requests.rate
        if rate is not None and (self.max_rate is None or rate < self.max_rate):
            # Recover by about 5 % a second (``rate`` successes arrive per second): slow enough that
            # probing above a server's limit costs few 429s (measured: +1 req/s per second at
            # 5 req/s made 15.6 % of requests 429s).
            ceiling = self._ceiling
            if ceiling is not None and rate >= ceiling * self.forget_ceiling:
                self._ceiling = ceiling = None
            near = ceiling is not None and rate >= ceiling * self.near_ceiling
            new_rate = rate + (self.probe_per_success if near else self.recovery_per_success)
            if self.max_rate is not None:
                new_rate = min(new_rate, self.max_rate)
            self.requests.rate = new_rate

    def on_rate_limited(self, retry_after: float | None, *, over_limit: bool = False) -> bool:
        """Count a 429 (or an in-flight 402); slow the pool when we are over the limit.

        Returns True when the whole pool was slowed down.
        """
        now = self._clock()
        self._record(True)
        share = self._limited / len(self._answers)
        if not over_limit and (len(self._answers) < 10 or share <= self.over_limit_share):
            return False
        if retry_after is not None:
            self.paused_until = max(self.paused_until, now + retry_after)
        # The requests in flight when the limit was hit all come back 429: count them as one signal.
        if now - self._last_decrease < self.decrease_cooldown_s:
            return True
        episode = now - self._last_decrease < self.episode_s
        self._last_decrease = now
        # Judge the new rate on answers to it: the 429s that made this decision, and those of
        # requests already in flight, would otherwise keep the share high and cut again and again.
        self._answers.clear()
        self._limited = 0
        self._window = max(1.0, self._window * self.window_decrease)
        self.gate.set_limit(int(self._window))
        accepted = self.accepted_rate(now)
        current = self.requests.rate
        refused_at = accepted if accepted is not None else current
        if refused_at is not None:
            # Within one episode the accepted rate falls with each cut: the first is the estimate.
            keep = episode and self._ceiling is not None
            self._ceiling = max(self._ceiling, refused_at) if keep else refused_at  # type: ignore[type-var]
        if accepted is not None:
            target = accepted * self.backoff_factor
            if current is not None:
                target = min(target, current * self.backoff_factor)
        elif current is not None:
            target = current * 0.5
        else:
            return True
        self.requests.rate = max(self.min_rate, target)
        return True

    def accepted_rate(self, now: float | None = None, span_s: float = 5.0) -> float | None:
        """Successes per second over the last ``span_s`` seconds; None before there are enough."""
        now = self._clock() if now is None else now
        recent = [t for t in self._successes if t >= now - span_s]
        if len(recent) < 5:
            return None
        # At least a second: servers count in windows of a second or more, so successes packed
        # into less than that say nothing about the rate they allow.
        return len(recent) / max(now - recent[0], 1.0)
