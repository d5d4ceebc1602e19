"""limits.py on a hand-driven clock: no real sleeps, every wait computed exactly."""

from __future__ import annotations

import asyncio
import contextvars
import math

import pytest

from batchrun.limits import AdaptiveLimits, ConcurrencyGate, RateLimiter


class FakeClock:
    """A monotonic clock that only moves when the test says so."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds



@pytest.fixture(autouse=True)
def _exact_ceilings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The logic tests read rates against the configured rpm; the margin has its own test."""
    monkeypatch.setattr(AdaptiveLimits, "rpm_margin", 1.0)


def test_the_request_rate_keeps_a_margin_under_the_rpm_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AdaptiveLimits, "rpm_margin", 0.98)
    clock = FakeClock()
    limits = AdaptiveLimits(concurrency=16, rpm=1200, clock=clock)
    assert limits.requests.rate == pytest.approx(19.6)
    waits = [limits.reserve(1) for _ in range(40)]
    # No burst: 40 requests at 19.6/s are spaced evenly from the first one.
    assert waits[0] == 0.0 and waits[-1] == pytest.approx(39 / 19.6)

def send_times(limiter: RateLimiter, clock: FakeClock, arrivals: list[float]) -> list[float]:
    """Reserve one unit at each arrival time; return when each may be sent."""
    times = []
    for arrival in arrivals:
        clock.now = arrival
        times.append(arrival + limiter.reserve())
    return times


def most_in_window(times: list[float], width: float) -> int:
    ordered = sorted(times)
    return max(
        sum(1 for t in ordered[i:] if t <= start + width + 1e-9) for i, start in enumerate(ordered)
    )


# -- RateLimiter ---------------------------------------------------------------------------------


def test_no_rate_never_waits() -> None:
    limiter = RateLimiter(None, clock=FakeClock())
    assert [limiter.reserve(1000) for _ in range(5)] == [0.0] * 5
    limiter.settle(1000, 1)  # no-op without a rate
    assert limiter.reserve() == 0.0


def test_rate_20_spaces_reservations_50ms_apart() -> None:
    limiter = RateLimiter(20, clock=FakeClock())
    delays = [limiter.reserve() for _ in range(6)]
    assert delays == pytest.approx([0.0, 0.05, 0.10, 0.15, 0.20, 0.25], abs=1e-12)


def test_a_minutes_quota_is_not_let_through_at_t0() -> None:
    limiter = RateLimiter(1200 / 60, clock=FakeClock())  # rpm 1200
    delays = [limiter.reserve() for _ in range(1200)]
    assert sum(1 for d in delays if d == 0.0) == 1
    assert delays[-1] == pytest.approx(1199 / 20, abs=1e-9)


@pytest.mark.parametrize("burst", [1.0, 3.0])
def test_burst_units_go_at_once_then_spacing(burst: float) -> None:
    limiter = RateLimiter(20, burst=burst, clock=FakeClock())
    delays = [limiter.reserve() for _ in range(int(burst) + 2)]
    assert delays == pytest.approx([0.0] * int(burst) + [0.05, 0.10], abs=1e-12)


def test_idle_time_does_not_bank_more_than_a_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(20, burst=2, clock=clock)
    limiter.reserve()
    clock.advance(100.0)
    assert [limiter.reserve() for _ in range(4)] == pytest.approx([0.0, 0.0, 0.05, 0.10], abs=1e-12)


@pytest.mark.parametrize("burst", [1.0, 4.0])
@pytest.mark.parametrize("width", [0.0, 0.04, 0.05, 0.06, 0.3, 1.0, 2.5])
def test_at_most_burst_plus_rate_times_t_in_any_window(burst: float, width: float) -> None:
    rate = 20.0
    clock = FakeClock()
    limiter = RateLimiter(rate, burst=burst, clock=clock)
    # Clumps of arrivals, pauses, then a steady trickle faster than the rate.
    arrivals = [0.0] * 30 + [1.0] * 5 + [5.0 + 0.01 * i for i in range(200)] + [9.0] * 10
    times = send_times(limiter, clock, arrivals)
    assert all(t >= a for t, a in zip(times, arrivals, strict=True))
    assert most_in_window(times, width) <= burst + rate * width + 1e-9


def test_large_reservation_passes_alone_then_others_wait_for_it() -> None:
    limiter = RateLimiter(100, burst=100, clock=FakeClock())  # tokens: 100/s, one second at once
    assert limiter.reserve(500) == 0.0
    assert limiter.reserve(10) == pytest.approx(4.1, abs=1e-12)


def test_settle_refunds_an_overestimate() -> None:
    limiter = RateLimiter(100, burst=100, clock=FakeClock())
    assert limiter.reserve(100) == 0.0
    assert limiter.reserve(100) == pytest.approx(1.0, abs=1e-12)
    limiter.settle(100, 20)  # the first used 20 of the 100 it booked
    assert limiter.reserve(50) == pytest.approx(0.7, abs=1e-12)


def test_settle_charges_an_underestimate() -> None:
    limiter = RateLimiter(100, burst=100, clock=FakeClock())
    assert limiter.reserve(50) == 0.0
    limiter.settle(50, 150)
    assert limiter.reserve(100) == pytest.approx(1.5, abs=1e-12)


def test_refund_never_banks_more_than_a_burst() -> None:
    limiter = RateLimiter(100, burst=100, clock=FakeClock())
    assert limiter.reserve(100) == 0.0
    limiter.settle(100, 0)
    limiter.settle(100, 0)  # refunds beyond what was booked
    assert limiter.reserve(100) == 0.0
    assert limiter.reserve(100) == pytest.approx(1.0, abs=1e-12)


def test_settle_before_any_reservation_is_harmless() -> None:
    limiter = RateLimiter(10, clock=FakeClock())
    limiter.settle(5, 0)
    assert [limiter.reserve(), limiter.reserve()] == pytest.approx([0.0, 0.1], abs=1e-12)


def test_rate_change_applies_to_the_next_reservations() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock)
    assert [limiter.reserve() for _ in range(3)] == pytest.approx([0.0, 0.1, 0.2], abs=1e-12)
    limiter.rate = 1.0
    assert limiter.rate == 1.0
    assert limiter.reserve() == pytest.approx(1.2, abs=1e-12)  # 0.2 booked, then 1 s
    clock.advance(10.0)
    assert [limiter.reserve(), limiter.reserve()] == pytest.approx([0.0, 1.0], abs=1e-12)
    limiter.rate = 50.0
    assert limiter.reserve() == pytest.approx(1.02, abs=1e-12)
    limiter.rate = None
    assert limiter.reserve() == 0.0


@pytest.mark.parametrize("rate", [0, -1.0])
def test_rate_must_be_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="rate must be positive or None"):
        RateLimiter(rate)
    limiter = RateLimiter(1.0)
    with pytest.raises(ValueError, match="rate must be positive or None"):
        limiter.rate = rate


# -- ConcurrencyGate -----------------------------------------------------------------------------


async def _settle_loop() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_gate_raising_the_limit_admits_waiters() -> None:
    async def main() -> None:
        gate = ConcurrencyGate(2)
        tasks = [asyncio.ensure_future(gate.acquire()) for _ in range(4)]
        await _settle_loop()
        assert [t.done() for t in tasks] == [True, True, False, False]
        assert gate.active == 2
        gate.set_limit(3)
        await _settle_loop()
        assert [t.done() for t in tasks] == [True, True, True, False]
        assert gate.active == 3
        gate.set_limit(10)
        await _settle_loop()
        assert all(t.done() for t in tasks)
        assert gate.active == 4

    asyncio.run(main())


def test_gate_lowering_the_limit_holds_new_work_until_enough_release() -> None:
    async def main() -> None:
        gate = ConcurrencyGate(3)
        for _ in range(3):
            await gate.acquire()
        gate.set_limit(1)
        waiter = asyncio.ensure_future(gate.acquire())
        await _settle_loop()
        gate.release()
        gate.release()
        await _settle_loop()
        assert gate.active == 1 and not waiter.done()
        gate.release()
        await _settle_loop()
        assert waiter.done() and gate.active == 1

    asyncio.run(main())


def test_gate_limit_never_below_one() -> None:
    gate = ConcurrencyGate(4)
    gate.set_limit(0)
    assert gate.limit == 1
    gate.set_limit(-5)
    assert gate.limit == 1


def test_gate_is_first_come_first_served() -> None:
    async def main() -> None:
        gate = ConcurrencyGate(1)
        order: list[int] = []
        await gate.acquire()

        async def worker(n: int) -> None:
            await gate.acquire()
            order.append(n)

        tasks = [asyncio.ensure_future(worker(n)) for n in range(3)]
        await _settle_loop()
        for _ in range(3):
            gate.release()
            await _settle_loop()
        assert order == [0, 1, 2]
        assert all(t.done() for t in tasks)
        # A newcomer does not overtake a woken waiter: the slot is already counted for it.
        gate.release()
        late = asyncio.ensure_future(gate.acquire())
        await _settle_loop()
        assert gate.active == 1 and late.done()

    asyncio.run(main())


def test_gate_cancelled_waiter_dropped_by_a_release_in_the_same_tick() -> None:
    async def main() -> None:
        gate = ConcurrencyGate(1)
        await gate.acquire()
        waiter = asyncio.ensure_future(gate.acquire())
        await _settle_loop()
        waiter.cancel()
        gate.release()  # runs before the cancelled task resumes
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert gate.active == 0
        await asyncio.wait_for(gate.acquire(), 1.0)
        assert gate.active == 1

    asyncio.run(main())


def test_gate_woken_then_cancelled_waiter_gives_its_slot_back() -> None:
    async def main() -> None:
        gate = ConcurrencyGate(1)
        await gate.acquire()
        waiter = asyncio.ensure_future(gate.acquire())
        other = asyncio.ensure_future(gate.acquire())
        await _settle_loop()
        gate.release()  # wakes ``waiter`` and counts the slot for it
        waiter.cancel()  # before it gets to run
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await _settle_loop()
        assert other.done()
        assert gate.active == 1

    asyncio.run(main())


# -- AdaptiveLimits ------------------------------------------------------------------------------


def test_an_over_limit_429_shrinks_window_and_rate_and_pauses_for_the_hint() -> None:
    clock = FakeClock(10.0)
    limits = AdaptiveLimits(concurrency=16, rpm=1200, clock=clock)
    assert limits.gate.limit == 16 and limits.requests.rate == 20.0
    assert limits.on_rate_limited(2.0, over_limit=True) is True
    assert limits.gate.limit == 12  # 16 * 0.75
    assert limits.requests.rate == 10.0  # no accepted rate known yet: half the current one
    assert limits.paused_until == 12.0
    assert limits.reserve(0) == pytest.approx(2.0, abs=1e-12)


def test_a_lone_upstream_429_is_not_a_signal() -> None:
    limits = AdaptiveLimits(concurrency=16, rpm=1200, clock=FakeClock())
    assert limits.on_rate_limited(30.0) is False
    assert (limits.gate.limit, limits.requests.rate, limits.paused_until) == (16, 20.0, -math.inf)
    assert limits.reserve(0) == 0.0


@pytest.mark.parametrize(
    ("successes", "limited", "slowed"),
    [
        (0, 3, False),  # fewer than 10 answers: no share yet
        (8, 1, False),
        (9, 1, True),  # 1 in 10 is over 5 %
        (19, 1, False),  # exactly 5 % is not over
        (38, 2, False),  # 2 in 40: exactly 5 %
        (37, 2, True),  # 2 in 39
    ],
)
def test_a_high_share_of_429s_is_a_signal(successes: int, limited: int, slowed: bool) -> None:
    clock = FakeClock()
    limits = AdaptiveLimits(concurrency=16, rpm=1200, clock=clock)
    for _ in range(successes):
        limits.on_success()
    results = [limits.on_rate_limited(None) for _ in range(limited)]
    assert results[-1] is slowed
    assert (limits.gate.limit < 16) is slowed


def test_after_a_slow_down_the_new_rate_is_judged_on_fresh_answers() -> None:
    clock = FakeClock()
    limits = AdaptiveLimits(concurrency=16, rpm=1200, clock=clock)
    for _ in range(9):
        limits.on_success()
    assert limits.on_rate_limited(None) is True  # 1 in 10
    rate = limits.requests.rate
    clock.advance(2.0)  # past the cooldown: only the stale share could cut again
    assert limits.on_rate_limited(None) is False  # a late 429 of a request sent before the cut
    assert limits.requests.rate == rate


def test_an_over_limit_429_without_a_hint_does_not_pause() -> None:
    limits = AdaptiveLimits(concurrency=4, rpm=600, clock=FakeClock())
    limits.on_rate_limited(None, over_limit=True)
    assert limits.paused_until == -math.inf
    assert (limits.gate.limit, limits.requests.rate) == (3, 5.0)


def booked(limits: AdaptiveLimits, tokens: float = 0.0) -> contextvars.Context:
    """One request booked in a context of its own, as a worker task books it."""
    context = contextvars.copy_context()
    context.run(limits.reserve, tokens)
    return context


def test_one_episode_is_one_pause_and_one_cut() -> None:
    clock = FakeClock(10.0)
    limits = AdaptiveLimits(concurrency=16, rpm=1200, clock=clock)
    in_flight = [booked(limits) for _ in range(16)]
    assert in_flight[0].run(limits.on_rate_limited, 2.0, over_limit=True) is True
    assert (limits.gate.limit, limits.requests.rate, limits.paused_until) == (12, 10.0, 12.0)
    # The other 15 were sent at the old rate: their 429s come back over the next seconds, some
    # after the pause ended and with longer hints, and change nothing.
    for i, request in enumerate(in_flight[1:]):
        clock.now = 10.0 + 0.2 * i
        assert request.run(limits.on_rate_limited, 5.0, over_limit=True) is False
    assert (limits.gate.limit, limits.requests.rate, limits.paused_until) == (12, 10.0, 12.0)
    assert limits.slowdowns == 1
    # A request booked after the cut that is refused again is a new signal: the new rate is too high.
    clock.now = 13.0
    fresh = booked(limits)
    assert fresh.run(limits.on_rate_limited, 1.0, over_limit=True) is True
    assert (limits.gate.limit, limits.requests.rate, limits.paused_until) == (9, 5.0, 14.0)
    assert limits.slowdowns == 2


def test_a_shorter_hint_never_shortens_the_pause() -> None:
    clock = FakeClock(10.0)
    limits = AdaptiveLimits(concurrency=16, rpm=1200, clock=clock)
    booked(limits).run(limits.on_rate_limited, 5.0, over_limit=True)
    clock.now = 11.0
    booked(limits).run(limits.on_rate_limited, 1.0, over_limit=True)
    assert limits.paused_until == 15.0


def test_stale_answers_do_not_count_towards_the_share() -> None:
    clock = FakeClock()
    limits = AdaptiveLimits(concurrency=16, rpm=1200, clock=clock)
    old = [booked(limits) for _ in range(30)]
    for _ in range(9):
        limits.on_success()
    assert old[0].run(limits.on_rate_limited, None) is True  # 1 in 10: over 5 %
    for request in old[1:20]:
        assert request.run(limits.on_rate_limited, None) is False  # the same episode
    assert limits.slowdowns == 1
    fresh = [booked(limits) for _ in range(10)]
    for request in fresh[:9]:
        request.run(limits.on_success)
    assert fresh[9].run(limits.on_rate_limited, None) is True  # 1 in 10 fresh answers


def test_worker_tasks_each_keep_their_own_booking() -> None:
    async def main() -> int:
        limits = AdaptiveLimits(concurrency=8, rpm=6000, clock=FakeClock())
        answered = asyncio.Event()

        async def worker() -> None:
            limits.reserve(0)
            await answered.wait()  # all eight are in flight when the server refuses them
            limits.on_rate_limited(1.0, over_limit=True)

        tasks = [asyncio.create_task(worker()) for _ in range(8)]
        await asyncio.sleep(0)
        answered.set()
        await asyncio.gather(*tasks)
        return limits.slowdowns

    assert asyncio.run(main()) == 1


@pytest.mark.parametrize(
    ("successes", "upstream", "unattributed", "slowed"),
    [
        (45, 5, 0, False),  # 10 % upstream 429s: that provider's noise, not the client's limit
        (38, 12, 0, False),  # 24 %
        (37, 13, 0, True),  # 26 %: a provider refusing one in four is saturated
        (44, 3, 3, True),  # the unattributed ones alone pass 5 %
        (45, 3, 2, False),  # 4 % unattributed, 10 % in all
        (0, 9, 0, False),  # fewer than 10 answers
    ],
)
def test_upstream_429s_slow_the_pool_only_past_their_own_share(
    successes: int, upstream: int, unattributed: int, slowed: bool
) -> None:
    limits = AdaptiveLimits(concurrency=16, rpm=1200, clock=FakeClock())
    for _ in range(successes):
        limits.on_success()
    results = [limits.on_rate_limited(1.0, upstream=True) for _ in range(upstream)]
    results += [limits.on_rate_limited(1.0) for _ in range(unattributed)]
    assert any(results) is slowed
    assert (limits.slowdowns == 1) is slowed


def test_one_percent_of_upstream_429s_never_slows_the_pool() -> None:
    limits = AdaptiveLimits(concurrency=32, clock=FakeClock())
    for i in range(10_000):
        if i % 100 == 99:
            assert limits.on_rate_limited(1.0, upstream=True) is False
        else:
            limits.on_success()
    assert limits.slowdowns == 0 and limits.paused_until == -math.inf


def test_capped_concurrency_stays_the_ceiling() -> None:
    clock = FakeClock()
    limits = AdaptiveLimits(concurrency=3000, clock=clock)
    limits.cap_concurrency(40)
    assert (limits.gate.limit, limits.max_concurrency) == (40, 40)
    limits.on_rate_limited(None, over_limit=True)
    assert limits.gate.limit == 30  # 0.75 of the cap, not of 3000
    for _ in range(2_000):
        limits.on_success()
    assert limits.gate.limit == 40
    limits.cap_concurrency(0)
    assert limits.gate.limit == 1


def test_repeated_429s_stop_at_the_floors() -> None:
    clock = FakeClock()
    limits = AdaptiveLimits(concurrency=8, rpm=60, clock=clock)
    for _ in range(30):
        clock.advance(1.0)
        limits.on_rate_limited(None, over_limit=True)
    assert limits.gate.limit == 1
    assert limits.requests.rate == AdaptiveLimits.min_rate == 0.1


@pytest.mark.parametrize(
    ("rpm", "rate"),
    [
        (None, 9.0),  # 0.9 of the 10/s the server was accepting
        (1200, 9.0),  # under the configured 20/s too
        (300, 4.5),  # never above 0.9 of the current rate
    ],
)
def test_an_over_limit_429_sets_the_rate_under_the_accepted_rate(rpm: float | None, rate: float) -> None:
    clock = FakeClock()
    limits = AdaptiveLimits(concurrency=16, rpm=rpm, clock=clock)
    for i in range(16):
        clock.now = 0.1 * i
        limits.on_success()
    clock.now = 1.6
    assert limits.accepted_rate() == pytest.approx(10.0, abs=1e-9)
    limits.on_rate_limited(None, over_limit=True)
    assert limits.requests.rate == pytest.approx(rate, abs=1e-9)


def test_accepted_rate_needs_recent_successes() -> None:
    clock = FakeClock()
    limits = AdaptiveLimits(concurrency=4, clock=clock)
    for _ in range(4):
        limits.on_success()
    assert limits.accepted_rate() is None
    limits.on_success()
    assert limits.accepted_rate() == pytest.approx(5.0)  # 5 at once, over at least a second
    clock.advance(5.1)
    assert limits.accepted_rate() is None  # all older than the span


def test_without_rpm_and_few_successes_a_429_keeps_the_rate_open() -> None:
    limits = AdaptiveLimits(concurrency=16, clock=FakeClock())
    for _ in range(3):
        limits.on_success()
    limits.on_rate_limited(1.0, over_limit=True)
    assert limits.requests.rate is None
    assert limits.gate.limit == 12


def test_successes_recover_gradually_up_to_the_ceilings() -> None:
    clock = FakeClock()
    limits = AdaptiveLimits(concurrency=16, rpm=1200, clock=clock)
    limits.on_rate_limited(None, over_limit=True)
    assert (limits.gate.limit, limits.requests.rate) == (12, 10.0)
    limits.on_success()
    assert limits.gate.limit == 12  # window 12.083
    assert limits.requests.rate == pytest.approx(10.05, abs=1e-12)
    limits_seen: list[int] = []
    rates_seen: list[float] = []
    for _ in range(400):
        clock.advance(0.05)
        limits.on_success()
        limits_seen.append(limits.gate.limit)
        rate = limits.requests.rate
        assert rate is not None
        rates_seen.append(rate)
    assert limits_seen == sorted(limits_seen) and rates_seen == sorted(rates_seen)
    assert max(limits_seen) == 16 and limits.gate.limit == 16
    assert max(rates_seen) == 20.0 and limits.requests.rate == 20.0
    assert limits_seen[10] < 16 and rates_seen[10] < 12.0  # gradual, not a jump back


def test_successes_without_a_429_stay_at_the_ceilings() -> None:
    limits = AdaptiveLimits(concurrency=4, rpm=60, clock=FakeClock())
    for _ in range(100):
        limits.on_success()
    assert (limits.gate.limit, limits.requests.rate) == (4, 1.0)


def test_tpm_books_tokens_and_settles_them() -> None:
    clock = FakeClock()
    limits = AdaptiveLimits(concurrency=4, tpm=6000, clock=clock)  # 100 tokens/s, 100 at once
    assert limits.reserve(100) == 0.0
    assert limits.reserve(100) == pytest.approx(1.0, abs=1e-12)
    limits.settle(100, 20)
    assert limits.reserve(50) == pytest.approx(0.7, abs=1e-12)


def test_reserve_waits_for_the_slower_of_rate_and_tokens() -> None:
    limits = AdaptiveLimits(concurrency=4, rpm=60, tpm=60_000, clock=FakeClock())  # 1 req/s, 1000 tok/s
    assert limits.reserve(10) == 0.0
    assert limits.reserve(10) == pytest.approx(1.0, abs=1e-12)  # the request rate binds
    assert limits.reserve(5000) == pytest.approx(2.0, abs=1e-12)  # passes alone (> a burst)
    assert limits.reserve(10) == pytest.approx(4.03, abs=1e-12)  # now the tokens bind


def test_recovery_slows_to_a_probe_near_the_rate_the_server_refused() -> None:
    clock = FakeClock()
    limits = AdaptiveLimits(concurrency=16, clock=clock)
    for i in range(16):
        clock.now = 0.1 * i
        limits.on_success()
    clock.now = 1.6
    limits.on_rate_limited(None, over_limit=True)  # refused at 10/s: the rate drops to 9/s
    steps = []
    for _ in range(200):
        before = limits.requests.rate
        limits.on_success()
        after = limits.requests.rate
        assert before is not None and after is not None
        steps.append(round(after - before, 9))
    fast, probe = AdaptiveLimits.recovery_per_success, AdaptiveLimits.probe_per_success
    # 9 → 9.5 (95 % of 10) at the fast step, then the probe step up to 11 (110 %), then fast again.
    assert steps[:10] == [fast] * 10
    assert set(steps[10:160]) == {probe}
    assert steps[-1] == fast
