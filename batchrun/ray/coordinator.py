"""The one place that keeps a sharded job's limits: rate, requests in flight, and the budget.

A plain class (Ray makes it a named actor with ``num_cpus=0``; its calls run one at a time), so
its arithmetic is tested without a cluster. Shards call ``lease`` about every 0.1 s, never per
request: one actor call costs 1.5-2 ms, which would cap a whole cluster near 600 req/s.

- Rate: GCRA over the job's ``--rpm`` (and ``--tpm``); a lease is N consecutive slots given as a
  delay relative to the call (clocks need not agree across machines) and a spacing.
- In flight: the ``--concurrency`` window is split between shards by their demand; a shard is
  never told to hold more than the window minus what the others may hold.
- 429s: every shard's reports feed one ``AdaptiveLimits``, so a cut slows them all.
- Budget: integer nano-dollars, as ``engine.budget`` keeps it; a shard reserves an allowance,
  spends from it request by request, and reports what was spent; ``spent`` starts from what the
  output's records already billed (the preflight's ``Budget``), so the cap is the job's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from batchrun.limits import AdaptiveLimits, Clock

__all__ = ["Coordinator", "Grant", "Report", "fair_shares", "lease_size"]

LEASE_S = 0.15  # each lease covers about this much of the job's rate, split over the shards
MAX_LEASE = 256


def lease_size(rate: float, shards: int, lease_s: float = LEASE_S) -> int:
    """Slots per lease: about ``lease_s`` of the rate per shard, 1..256."""
    return max(1, min(MAX_LEASE, round(rate * lease_s / max(shards, 1))))


def fair_shares(total: int, demands: list[int]) -> list[int]:
    """Split ``total`` slots by demand: nobody gets more than it asks, the rest is shared evenly."""
    shares = [0] * len(demands)
    left = total
    order = sorted(range(len(demands)), key=demands.__getitem__)
    for position, shard in enumerate(order):
        share = min(demands[shard], left // (len(order) - position))
        shares[shard] = share
        left -= share
    for shard in reversed(order):  # what integer division left over goes to the hungriest
        extra = min(left, demands[shard] - shares[shard])
        shares[shard] += extra
        left -= extra
    return shares


@dataclass(frozen=True)
class Report:
    """What a shard tells the coordinator since its last call, and what it asks for."""

    in_use: int = 0  # requests in flight plus finished records the driver has not written yet
    limit_now: int = 0  # the in-flight limit the shard enforces now
    demand: int = 0  # requests it could send now (in use + waiting)
    want_slots: bool = False
    successes: int = 0
    rate_limited: tuple[tuple[float | None, bool], ...] = ()  # (retry_after, over_limit) per 429
    tokens_booked: float = 0.0  # estimated tokens of the requests sent
    tokens_settled: float = 0.0  # actual minus estimated tokens of the requests answered
    spent_units: int = 0  # money spent from the allowance (settled requests)
    returned_units: int = 0  # allowance handed back unspent
    want_units: int = 0  # allowance wanted now (0: none)
    min_units: int = 0  # the least allowance that lets the waiting request go
    done: bool = False  # the shard ended: it holds nothing any more


@dataclass(frozen=True)
class Grant:
    """The coordinator's answer: limits to hold until the next call."""

    limit: int
    rate: float | None
    epoch: int  # changes when the rate is cut or a pause begins: drop the slots leased before
    short: bool = False  # the limit is below the shard's fair share: others must give slots back
    pause_s: float = 0.0  # send nothing new for this long
    first_slot_s: float | None = None  # the leased slots: from now + first_slot_s,
    spacing_s: float = 0.0  # one every spacing_s,
    slots: int = 0  # this many
    granted_units: int = 0
    budget: str = "ok"  # "wait": others' requests may still give money back; "out": none left
    spent_units: int = 0
    budget_units: int | None = None


@dataclass
class _Shard:
    held: int = 0  # the most slots this shard may be using
    demand: int = 0
    allowance: int = 0  # money granted and neither spent nor returned


@dataclass
class Coordinator:
    """Rate, in-flight and budget state for all the shards of one job."""

    shards: int
    concurrency: int
    rpm: float | None = None
    tpm: float | None = None
    budget_units: int | None = None
    spent_units: int = 0
    clock: Clock = time.monotonic
    lease_s: float = LEASE_S
    calls: int = 0
    epoch: int = 0
    _state: list[_Shard] = field(default_factory=list)
    _limits: AdaptiveLimits | None = None

    def __post_init__(self) -> None:
        # Until a shard reports, it is taken to want a full window: the first grants are even.
        self._state = [_Shard(demand=self.concurrency) for _ in range(self.shards)]
        self._limits = AdaptiveLimits(
            concurrency=self.concurrency, rpm=self.rpm, tpm=self.tpm, clock=self.clock
        )

    @property
    def limits(self) -> AdaptiveLimits:
        assert self._limits is not None
        return self._limits

    def lease(self, shard: int, report: Report) -> Grant:
        """Take a shard's report and answer with its limits (and the slots or money it asked for)."""
        self.calls += 1
        limits = self.limits
        now = self.clock()
        self._signals(report)
        state = self._state[shard]
        budget = self._budget(state, report)
        if report.done:
            state.held = state.demand = 0
            return Grant(0, limits.requests.rate, self.epoch, **budget)
        limit, short = self._in_flight(shard, report)
        tokens_wait = limits.tokens.reserve(report.tokens_booked) if report.tokens_booked else 0.0
        pause_s = max(limits.paused_until - now, tokens_wait, 0.0)
        rate = limits.requests.rate
        slots: dict[str, float | int] = {}
        if report.want_slots and rate is not None:
            count = lease_size(rate, self.shards, self.lease_s)
            first = limits.requests.reserve(count, not_before=max(limits.paused_until, now + tokens_wait))
            slots = {"first_slot_s": first, "spacing_s": 1.0 / rate, "slots": count}
        return Grant(limit, rate, self.epoch, short, pause_s, **slots, **budget)  # type: ignore[arg-type]

    def forget(self, shard: int) -> None:
        """A shard died: free its slots; what it held of the budget counts as spent (it may be billed)."""
        state = self._state[shard]
        self.spent_units += state.allowance
        self._state[shard] = _Shard(demand=self.concurrency)

    def stats(self) -> dict[str, object]:
        """Figures for the driver's summary and the tests."""
        return {
            "calls": self.calls, "epoch": self.epoch, "rate": self.limits.requests.rate,
            "window": self.limits.gate.limit, "spent_units": self.spent_units,
            "held": [s.held for s in self._state], "allowance": [s.allowance for s in self._state],
        }

    # -- the parts of a lease ---------------------------------------------------------------

    def _signals(self, report: Report) -> None:
        limits = self.limits
        for _ in range(report.successes):
            limits.on_success()
        before = (limits.requests.rate, limits.paused_until)
        for retry_after, over_limit in report.rate_limited:
            limits.on_rate_limited(retry_after, over_limit=over_limit)
        if (limits.requests.rate, limits.paused_until) != before:
            self.epoch += 1
        if report.tokens_settled:
            limits.tokens.settle(0.0, report.tokens_settled)

    def _in_flight(self, shard: int, report: Report) -> tuple[int, bool]:
        """The shard's new limit: its fair share, within what the others may still be using.

        A shard may be using up to max(in use, the limit it enforces) until it has applied this
        answer, so that is what it holds now; a raise counts at once, a cut at its next call.
        """
        state = self._state[shard]
        state.demand = report.demand
        bound = max(report.in_use, report.limit_now)
        state.held = bound
        others = sum(s.held for s in self._state) - bound
        window = self.limits.gate.limit
        target = fair_shares(window, [s.demand for s in self._state])[shard]
        limit = max(0, min(target, window - others))
        state.held = max(bound, limit)
        return limit, limit < target

    def _budget(self, state: _Shard, report: Report) -> dict[str, Any]:
        state.allowance -= report.spent_units + report.returned_units
        self.spent_units += report.spent_units
        answer: dict[str, Any] = {"spent_units": self.spent_units, "budget_units": self.budget_units}
        if not report.want_units:
            return answer
        if self.budget_units is None:
            granted = report.want_units
        else:
            room = self.budget_units - self.spent_units - sum(s.allowance for s in self._state)
            granted = report.want_units if room >= report.want_units else max(room, 0)
            if granted < max(report.min_units, 1):
                granted = 0
                # Money held by requests in flight comes back when they are answered below
                # their worst case: wait for that before calling the budget spent.
                answer["budget"] = "wait" if any(s.allowance > 0 for s in self._state) else "out"
        state.allowance += granted
        answer["granted_units"] = granted
        return answer
