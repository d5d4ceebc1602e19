"""Rate and concurrency limits: smooth, adjustable at run time, with reserve/settle, on an injected clock.

Why our own: aiolimiter's ``AsyncLimiter(rpm, 60)`` lets a whole minute's quota through at t=0,
and ``AsyncLimiter(1, 60/rpm)`` refuses weighted acquires and cannot refund or change its rate.
``RateLimiter`` is a GCRA (virtual scheduling) limiter: each reservation pushes a "theoretical
arrival time" forward by ``amount / rate``, so requests are spaced evenly, a token estimate can be
settled against the real usage afterwards, and the rate can change while requests wait.

``AdaptiveLimits`` closes the loop (AIMD): when the server says the client is over its limit, the
concurrency window and the request rate are cut once and the whole pool pauses until the server's
reset; successes recover both additively. Configured limits stay the ceiling.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
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
    5,000-request job from 4 s to 330 s). The pool slows down only when the server says the limit
    is the client's own (``over_limit``: ``X-RateLimit-Remaining: 0`` with no upstream source
    named, an in-flight 402), when more than ``over_limit_share`` of recent answers are 429s that
    name no upstream source, or when more than ``upstream_share`` of them are 429s of any kind (a
    provider refusing that often is saturated). It then pauses for the server's hint and sets the
    request rate just under the rate the server was accepting, instead of halving step by step.

    One limit hit is one episode: one pause and one cut. The requests already booked when the
    pool slowed down were sent at the old rate, so their 429s (they come back in a burst, up to
    the concurrency) say nothing about the new one: each answer is matched to the booking its
    task made last (``reserve`` and the answer come from the same worker task) and a 429 booked
    before the latest cut neither cuts nor pauses again. Only 429s of requests booked after it do.
    """

    over_limit_share = 0.05
    # Upstream 429s are noise of one provider's shared pool: at 1-2 % a 5 % share is crossed by
    # chance every few dozen 429s (measured: 19 cuts in a 5,000-line job with 2 %).
    upstream_share = 0.25
    min_answers = 10  # before that many answers, no share is taken
    backoff_factor = 0.9  # of the accepted rate, when over the limit
    window_decrease = 0.75
    min_rate = 0.1  # requests per second; never throttle to a full stop
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
        self.slowdowns = 0  # pool-wide cuts so far: the episode a booking belongs to
        self._window = float(concurrency)
        self._last_decrease = -math.inf
        # Per recent answer: 0 a success, 1 a 429 naming no upstream source, 2 an upstream 429.
        self._answers: collections.deque[int] = collections.deque(maxlen=self.recent)
        self._limited = 0  # 429s naming no upstream source among _answers
        self._upstream = 0  # upstream 429s among _answers
        # The episode in which the current task booked its request (see the class docstring).
        self._booked: contextvars.ContextVar[int] = contextvars.ContextVar(f"booked-{id(self)}")
        self._successes: collections.deque[float] = collections.deque(maxlen=2048)
        self._ceiling: float | None = None  # the request rate the server last refused

    def cap_concurrency(self, limit: int) -> None:
        """Lower the concurrency ceiling (the open-file limit allows no more connections)."""
        self.max_concurrency = min(self.max_concurrency, max(1, limit))
        self._window = min(self._window, float(self.max_concurrency))
        self.gate.set_limit(int(self._window))

    def reserve(self, tokens: float) -> float:
        """Book one request of ``tokens`` estimated tokens; return the seconds to wait before sending.

        The booking is remembered for the calling task: its answer (``on_success`` or
        ``on_rate_limited`` from the same task) is judged against the limits it was sent under.
        """
        self._booked.set(self.slowdowns)
        now = self._clock()
        wait = max(self.requests.reserve(1.0, not_before=self.paused_until), self.tokens.reserve(tokens))
        return max(wait, self.paused_until - now)

    def settle(self, reserved_tokens: float, actual_tokens: float) -> None:
        self.tokens.settle(reserved_tokens, actual_tokens)

    def _stale(self) -> bool:
        """This task's request was booked before the latest cut (so sent at the old rate)."""
        return self._booked.get(self.slowdowns) < self.slowdowns

    def _record(self, answer: int) -> None:
        answers = self._answers
        if len(answers) == answers.maxlen:
            oldest = answers[0]
            self._limited -= oldest == 1
            self._upstream -= oldest == 2
        answers.append(answer)
        self._limited += answer == 1
        self._upstream += answer == 2

    def _share_says_over(self) -> bool:
        count = len(self._answers)
        if count < self.min_answers:
            return False
        return (
            self._limited / count > self.over_limit_share
            or (self._limited + self._upstream) / count > self.upstream_share
        )

    def on_success(self) -> None:
        now = self._clock()
        if not self._stale():
            self._record(0)
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

    def on_rate_limited(
        self, retry_after: float | None, *, over_limit: bool = False, upstream: bool = False
    ) -> bool:
        """Count a 429 (or an in-flight 402); slow the pool when the client is over its limit.

        ``over_limit``: the server says the limit is the client's own; ``upstream``: the 429 names
        a provider behind the server (counted only towards ``upstream_share``). A 429 of a request
        booked before the latest cut is part of that episode and changes nothing. Returns True
        when this 429 slowed the whole pool down.
        """
        now = self._clock()
        if self._stale():
            return False
        self._record(2 if upstream else 1)
        if not over_limit and not self._share_says_over():
            return False
        if retry_after is not None:
            self.paused_until = max(self.paused_until, now + retry_after)
        episode = now - self._last_decrease < self.episode_s
        self._last_decrease = now
        self.slowdowns += 1
        # Judge the new rate on answers to it: the 429s that made this decision, and those of
        # requests already in flight, would otherwise keep the share high and cut again and again.
        self._answers.clear()
        self._limited = self._upstream = 0
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
