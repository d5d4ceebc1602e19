"""How the budget is kept: the job's spending cap, and the two ways batchrun prices a request.

Money is held in integer nano-dollars so that reservations and settlements add up exactly, in one
process or summed over shards (floats drift: 3,000 reservations of $0.0000015 summed to 6e-17 over
the cap). Nano, not micro: one request to the default model costs about 4 µ$, which micro-dollars
would round by a quarter.

Two prices of a request, each with one name, used everywhere:
- ``worst_case_bound``: a hard upper bound, what the budget reserves before a request is sent:
  the request body's UTF-8 bytes counted as prompt tokens (no tokenizer makes more tokens than
  bytes), the reply at ``max_tokens``, at the dearest model that may serve it.
- ``estimate_cost``: an estimate for people (the plan line, ``batchrun estimate``): the prompt at
  4 characters per token (records.estimate_prompt_tokens, about ±20 %), low / expected / high.

The budget is the job's, not a run's: what the output's records already billed counts against it
(``spent_before_usd``), so rerunning the same command never spends the cap again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from batchrun.config import output_paths
from batchrun.ledger import last_error_lines, read_records
from batchrun.pricing import Price

__all__ = [
    "ASSUMED_UNBOUNDED_OUTPUT",
    "EXPECTED_OUTPUT_SHARE",
    "INPUT_ERROR",
    "NANO",
    "Budget",
    "CostEstimate",
    "billed_in_output",
    "estimate_cost",
    "from_nano",
    "to_nano",
    "worst_case_bound",
]

NANO = 1_000_000_000
INPUT_ERROR = 0.20  # how far the 4-characters-per-token rule can be off, either way
EXPECTED_OUTPUT_SHARE = 0.5  # of max_tokens, for the expected cost
ASSUMED_UNBOUNDED_OUTPUT = 256  # output tokens expected of a request with no max_tokens


def to_nano(usd: float) -> int:
    """USD as whole nano-dollars, rounded up (a reservation is never smaller than the cost)."""
    return math.ceil(usd * NANO - 1e-6)


def from_nano(nano: int) -> float:
    return nano / NANO


def worst_case_bound(body_bytes: int, max_tokens: int, prices: list[Price]) -> int:
    """The most one request can cost, in nano-dollars: bytes as tokens, the reply at max_tokens."""
    return max(to_nano(price.cost(body_bytes, max_tokens)) for price in prices)


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """An estimate for people: the prompt ±20 %, the reply at nothing / half / all of max_tokens."""

    low: float
    expected: float
    high: float


def estimate_cost(
    prompt_tokens_est: int, max_tokens: int | None, price: Price, *, unbounded_output: int
) -> CostEstimate:
    """Estimate one request; ``unbounded_output`` tokens are expected of one with no max_tokens."""
    expected_output = unbounded_output if max_tokens is None else EXPECTED_OUTPUT_SHARE * max_tokens
    return CostEstimate(
        low=(1 - INPUT_ERROR) * prompt_tokens_est * price.prompt,
        expected=prompt_tokens_est * price.prompt + expected_output * price.completion,
        high=(1 + INPUT_ERROR) * prompt_tokens_est * price.prompt
        + (max_tokens or 0) * price.completion,
    )


def billed_in_output(output: Path) -> float:
    """What the records of an output already billed, in USD.

    A record's ``billed_usd`` adds up every billed attempt of its id, runs before included, so
    the job's total is the results' plus, for each id without one, its last error line's.
    """
    paths = output_paths(output)
    total = 0.0
    done: set[str] = set()
    for _, record in read_records(paths["results"]):
        if isinstance(record, dict):
            done.add(str(record.get("custom_id")))
            total += _billed(record)
    last, _ = last_error_lines(paths["errors"], done)
    keep = set(last.values())
    if keep:
        for number, record in read_records(paths["errors"]):
            if number in keep and isinstance(record, dict):
                total += _billed(record)
    return total


def _billed(record: dict[str, object]) -> float:
    value = record.get("billed_usd")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


class Budget:
    """The job's cap: reserve a request's worst case before sending it, settle what it cost."""

    def __init__(self, limit_usd: float | None, *, spent_before_usd: float = 0.0) -> None:
        self.limit = None if limit_usd is None else math.floor(limit_usd * NANO + 1e-6)
        self.spent_before = to_nano(spent_before_usd) if spent_before_usd > 0 else 0
        self.spent = self.spent_before
        self.reserved = 0

    @property
    def capped(self) -> bool:
        return self.limit is not None

    def left(self) -> int | None:
        """Nano-dollars not yet spent or reserved; None without a cap."""
        return None if self.limit is None else self.limit - self.spent - self.reserved

    def try_reserve(self, worst: int) -> bool:
        """Book ``worst`` if it fits under the cap; False (nothing booked) when it does not."""
        if self.limit is not None and self.spent + self.reserved + worst > self.limit:
            return False
        self.reserved += worst
        return True

    def settle(self, reserved: int, cost: int) -> None:
        """Release a reservation of ``reserved`` and book ``cost`` (both nano-dollars)."""
        self.reserved -= reserved
        self.spent += cost

    def spent_usd(self) -> float:
        return from_nano(self.spent)

    def spent_now_usd(self) -> float:
        """What this run spent (the job's total less what earlier runs had)."""
        return from_nano(self.spent - self.spent_before)
