"""A shard's side of the coordinator: its in-flight gate, its rate slots and its budget allowance.

``LeasedLimits`` stands where the single-process engine has ``AdaptiveLimits``: the engine asks
it for a turn and reports successes and 429s as always, and one task (``LeaseClient.run``)
trades those reports for new limits with the coordinator about every 0.1 s.

A finished record keeps its in-flight slot until the driver has written it (``hold``/``acked``):
so what a dead shard or a dead driver can lose, sent but not written, never exceeds the slots
the shard holds, and the job's ``--concurrency`` bounds what any crash re-pays.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Awaitable, Callable

from batchrun.limits import ConcurrencyGate
from batchrun.ray.coordinator import Grant, Report

__all__ = ["BudgetOut", "LeaseClient", "LeasedGate", "LeasedLimits"]

_PERIOD_S = 0.1  # the longest a shard goes without telling the coordinator what it saw
_MIN_GAP_S = 0.01  # the shortest time between two calls, so a starved shard does not spin
_BUDGET_LEASE = 16  # a budget allowance covers this many worst cases of the waiting request

LeaseCall = Callable[[Report], Awaitable[Grant]]


class BudgetOut(Exception):
    """The job's budget cannot pay for the next request."""


class LeasedGate(ConcurrencyGate):
    """The in-flight gate, limited by the coordinator, whose slots stay taken until written."""

    def __init__(self, client: LeaseClient) -> None:
        super().__init__(0)
        self._client = client
        self.held = 0  # finished records the driver has not written yet
        self.short = True  # below its fair share: a blocked acquire asks at once, not next period

    async def acquire(self) -> None:
        if self.short and (self.active >= self.limit or self._waiters):
            self._client.wake()
        await super().acquire()
        try:
            await self._client.turn()
        except BaseException:
            super().release()
            raise

    def release(self) -> None:
        # The caller may write a record right after (which keeps the slot, ``hold``): the wake
        # waits for that, so no waiter is let in on a slot that is not free.
        self.active -= 1
        asyncio.get_running_loop().call_soon(self._wake)

    def hold(self) -> None:
        """Keep a slot for a finished record until ``acked``."""
        self.active += 1
        self.held += 1

    def acked(self, count: int) -> None:
        """The driver wrote ``count`` records: their slots are free."""
        self.active -= count
        self.held -= count
        self._wake()

    def set_limit(self, limit: int) -> None:
        self.limit = max(0, limit)  # 0 is a real answer: another shard holds the whole window
        self._wake()


class LeasedLimits:
    """The engine's limits seam (reserve/settle/on_success/on_rate_limited, gate) over leases."""

    def __init__(self, client: LeaseClient) -> None:
        self._client = client
        self.gate = LeasedGate(client)
        client.gate = self.gate

    def reserve(self, tokens: float) -> float:
        """The rate wait already happened in ``gate.acquire``; book the tokens for the report."""
        self._client.tokens_booked += tokens
        return 0.0

    def settle(self, reserved_tokens: float, actual_tokens: float) -> None:
        self._client.tokens_settled += actual_tokens - reserved_tokens

    def on_success(self) -> None:
        self._client.successes += 1

    def on_rate_limited(self, retry_after: float | None, *, over_limit: bool = False) -> bool:
        self._client.rate_limited(retry_after, over_limit)
        return over_limit


class LeaseClient:
    """Holds what the coordinator granted this shard, and asks for more when it runs short."""

    def __init__(self, call: LeaseCall, *, budget: bool, clock: Callable[[], float] = time.monotonic):
        self._call = call
        self._clock = clock
        self.gate: LeasedGate | None = None
        self.budget = budget
        self.demand: Callable[[], int] = lambda: 0  # set by the shard: requests it could send now
        self.successes = 0
        self.tokens_booked = 0.0
        self.tokens_settled = 0.0
        self._limited: list[tuple[float | None, bool]] = []
        self._rate: float | None = None
        self._epoch = 0
        self._slots: collections.deque[float] = collections.deque()
        self._spacing = 0.0
        self._slot_waiters = 0
        self._paused_until = -math.inf
        self._lease = 1
        self._changed = asyncio.Event()  # a grant was applied
        self._need = asyncio.Event()  # something cannot wait for the next period
        self._closing = False
        self.calls = 0
        # budget, in nano-dollars
        self.free_units = 0
        self._spent_units = 0
        self._returned_units = 0
        self._want: tuple[int, int] | None = None  # (want, min) while a request waits for money
        self._budget_out = False
        self.spent_total_units = 0
        self.budget_units: int | None = None

    # -- what the engine calls --------------------------------------------------------------

    def wake(self) -> None:
        self._need.set()

    async def turn(self) -> None:
        """Wait for a pause to end and, under a rate, for one leased slot."""
        while True:
            now = self._clock()
            if self._paused_until > now:
                await self._sleep(self._paused_until - now)
                continue
            if self._rate is None:
                return
            while self._slots and self._slots[0] < now - self._spacing:
                self._slots.popleft()  # too late to use: sent now, it would make a burst
            if not self._slots:
                self._slot_waiters += 1
                self.wake()
                try:
                    await self._changed.wait()
                finally:
                    self._slot_waiters -= 1
                continue
            at, epoch = self._slots.popleft(), self._epoch
            if self._wants_slots(now):
                self.wake()
            if at > now:
                await self._sleep(at - now)
            if epoch == self._epoch:  # a cut since then voids the slot
                return

    def rate_limited(self, retry_after: float | None, over_limit: bool) -> None:
        self._limited.append((retry_after, over_limit))
        if over_limit and retry_after is not None:
            # This shard stops at once; the others hear of it at their next call.
            self._paused_until = max(self._paused_until, self._clock() + retry_after)
            self._slots.clear()
        self.wake()

    async def book(self, units: int) -> None:
        """Take ``units`` from the allowance, asking the coordinator for more; BudgetOut if none."""
        while self.free_units < units:
            if self._budget_out:
                raise BudgetOut
            self._want = (units * _BUDGET_LEASE, units)
            self.wake()
            await self._changed.wait()
        self.free_units -= units

    def refund(self, units: int) -> None:
        """A booked request was not sent."""
        self.free_units += units

    def spend(self, reserved_units: int, spent_units: int) -> None:
        """A booked request was answered (or given up): it cost ``spent_units``."""
        self.free_units += reserved_units - spent_units
        self._spent_units += spent_units

    # -- the task that talks to the coordinator ---------------------------------------------

    async def run(self) -> None:
        """Report and renew every period, or at once when the engine needs something; until closed."""
        last = -math.inf
        self._need.set()  # the first limits, at once
        while not self._closing:
            with _suppress_timeout():
                await asyncio.wait_for(self._need.wait(), _PERIOD_S)
            gap = _MIN_GAP_S - (self._clock() - last)
            if gap > 0:
                await asyncio.sleep(gap)
            self._need.clear()
            last = self._clock()
            await self._exchange()

    async def close(self) -> None:
        """The last report: every slot and the whole allowance go back."""
        self._closing = True
        self._need.set()
        await self._exchange(done=True)

    async def _exchange(self, *, done: bool = False) -> None:
        report = self._report(done)
        sent = self._clock()
        grant = await self._call(report)
        self.calls += 1
        self._apply(grant, sent, self._clock())

    def _report(self, done: bool) -> Report:
        gate = self.gate
        assert gate is not None
        demand = 0 if done else self.demand()
        returned = self._returned_units
        want = min_units = 0
        if self._want is not None and not done:
            want, min_units = self._want
            returned += self.free_units  # pooled again, so that no shard sits on money it cannot use
            self.free_units = 0
        elif done or demand == 0:
            returned += self.free_units
            self.free_units = 0
        report = Report(
            in_use=0 if done else gate.active, limit_now=gate.limit, demand=demand,
            want_slots=not done and demand > 0 and self._wants_slots(self._clock()),
            successes=self.successes, rate_limited=tuple(self._limited),
            tokens_booked=self.tokens_booked, tokens_settled=self.tokens_settled,
            spent_units=self._spent_units, returned_units=returned, want_units=want,
            min_units=min_units, done=done,
        )
        self.successes = 0
        self._limited = []
        self.tokens_booked = self.tokens_settled = 0.0
        self._spent_units = self._returned_units = 0
        return report

    def _apply(self, grant: Grant, sent: float, received: float) -> None:
        gate = self.gate
        assert gate is not None
        # The grant's delays count from when the coordinator answered: about mid-way.
        answered = (sent + received) / 2
        if grant.epoch != self._epoch:
            self._epoch = grant.epoch
            self._slots.clear()
        self._rate = grant.rate
        if grant.pause_s > 0:
            self._paused_until = max(self._paused_until, answered + grant.pause_s)
        if grant.slots and grant.first_slot_s is not None:
            self._spacing = grant.spacing_s
            first = answered + grant.first_slot_s
            self._slots.extend(first + i * grant.spacing_s for i in range(grant.slots))
            self._lease = grant.slots
        if self.budget:
            self.free_units += grant.granted_units
            self.spent_total_units = grant.spent_units
            self.budget_units = grant.budget_units
            if grant.granted_units or grant.budget == "out":
                self._want = None
            self._budget_out = grant.budget == "out"
        gate.short = grant.short
        gate.set_limit(grant.limit)
        self._changed.set()
        self._changed = asyncio.Event()

    def _wants_slots(self, now: float) -> bool:
        """Under a rate: whether the slots in hand end within half a lease (so ask for the next).

        Asking earlier would hoard the rate: slots are booked in order, so one shard's lead
        pushes the others' slots later.
        """
        if self._rate is None:
            return False
        if not self._slots:
            return True
        return self._slots[-1] - now < 0.5 * self._lease * self._spacing

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _suppress_timeout:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        return kind is not None and issubclass(kind, (asyncio.TimeoutError, TimeoutError))
