"""A dry run: what a job would send, what it could cost and how long it would take. Sends nothing.

The input is streamed through the same ``InputParser`` the runner uses, so requests, invalid lines
and the ``--limit`` cut are counted exactly as a run would count them; nothing of a line is kept.
How the figures are made (each is printed with its assumption):

- input tokens: ``records.estimate_prompt_tokens``, 4 characters per token plus 4 per message
  (no tokenizer can be downloaded offline; about ±20 % for English prose);
- worst-case output tokens: the sum of every request's ``max_tokens``; requests without one are
  counted as unbounded;
- cost, per request at its model's price (job ``[pricing]``, then the provider's ``/models`` list
  as the last run cached it, or as ``--fetch-prices`` fetches it now, then the built-in table):
  low = the input alone at 80 % of the estimate (a reply costs at least nothing);
  expected = the input estimate plus half of ``max_tokens`` (``ASSUMED_UNBOUNDED_OUTPUT`` tokens
  when there is none);
  worst = the input at 120 % of the estimate plus all of ``max_tokens``, each request billed once;
- duration: the slowest of the configured limits (rpm; tpm booked as prompt + max_tokens, as the
  limiter does; concurrency at ``ASSUMED_LATENCY_S`` per request).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchrun.batch import batch_api
from batchrun.config import JobConfig, api_key_from_env, output_paths
from batchrun.engine.budget import (
    ASSUMED_UNBOUNDED_OUTPUT,
    EXPECTED_OUTPUT_SHARE,
    INPUT_ERROR,
    estimate_cost,
)
from batchrun.engine.preflight import parser_for
from batchrun.errors import ConfigError
from batchrun.inputs import iter_lines, open_input
from batchrun.ledger import result_ids
from batchrun.price_cache import load_provider_prices
from batchrun.pricing import PriceBook
from batchrun.records import InvalidLine
from batchrun.units import duration_text

__all__ = [
    "ASSUMED_LATENCY_S",
    "ASSUMED_UNBOUNDED_OUTPUT",
    "EXPECTED_OUTPUT_SHARE",
    "INPUT_ERROR",
    "Estimate",
    "estimate",
    "price_book",
]

ASSUMED_LATENCY_S = 1.0  # per request, for the duration at a concurrency cap
_MAX_REASONS = 1000  # distinct invalid-line messages counted; the most common is printed


@dataclass
class Estimate:
    """The figures of a dry run; ``lines()`` prints them with their assumptions."""

    input: str
    model: str
    lines_read: int = 0
    requests: int = 0
    invalid_lines: int = 0
    invalid_reasons: Counter[str] = field(default_factory=Counter)  # message -> lines (capped)
    already_done: int = 0
    input_tokens: int = 0
    output_tokens_worst: int = 0  # sum of max_tokens over requests that have one
    unbounded: int = 0  # requests without max_tokens
    cost_low: float = 0.0
    cost_expected: float = 0.0
    cost_worst: float = 0.0  # over requests with max_tokens and a known price
    unpriced: Counter[str] = field(default_factory=Counter)  # model -> requests with no price
    models: Counter[str] = field(default_factory=Counter)
    rpm: float | None = None
    tpm: float | None = None
    concurrency: int = 1
    booked_tokens: int = 0  # what a tpm limiter books: prompt estimate + max_tokens
    price_sources: dict[str, str | None] = field(default_factory=dict)  # model -> where its price is from
    # The same requests through the provider's Batch API (--mode batch), at each model's batch price.
    batch_low: float = 0.0
    batch_expected: float = 0.0
    batch_worst: float = 0.0
    batch_unpriced: Counter[str] = field(default_factory=Counter)  # model -> requests, no batch price
    batch_price_sources: dict[str, str | None] = field(default_factory=dict)

    @property
    def worst_bounded(self) -> bool:
        """True when the worst case is a real ceiling: every request has max_tokens and a price."""
        return self.unbounded == 0 and not self.unpriced

    def durations_s(self) -> dict[str, float | None]:
        """Seconds each limit alone needs for the requests; None where the limit is not set."""
        n = self.requests
        return {
            "rpm": n / self.rpm * 60.0 if self.rpm else None,
            "tpm": self.booked_tokens / self.tpm * 60.0 if self.tpm else None,
            "concurrency": n * ASSUMED_LATENCY_S / self.concurrency,
        }

    @property
    def duration_s(self) -> float:
        """The slowest limit sets the pace."""
        return max(v for v in self.durations_s().values() if v is not None)

    @property
    def binding_limit(self) -> str:
        durations = self.durations_s()
        return max((k for k, v in durations.items() if v is not None), key=lambda k: durations[k] or 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "model": self.model,
            "models": dict(self.models),
            "lines_read": self.lines_read,
            "requests": self.requests,
            "invalid_lines": self.invalid_lines,
            "invalid_reason": self._top_reason(),
            "already_done": self.already_done,
            "input_tokens_est": self.input_tokens,
            "output_tokens_worst": self.output_tokens_worst,
            "requests_without_max_tokens": self.unbounded,
            "cost_usd": {
                "low": self.cost_low,
                "expected": self.cost_expected,
                "worst": self.cost_worst if self.worst_bounded else None,
                "worst_bounded_part": self.cost_worst,
            },
            "batch_cost_usd": {
                "low": self.batch_low,
                "expected": self.batch_expected,
                "worst": self.batch_worst if self.unbounded == 0 and not self.batch_unpriced else None,
            },
            "requests_without_batch_price": dict(self.batch_unpriced),
            "batch_price_sources": dict(self.batch_price_sources),
            "requests_without_price": dict(self.unpriced),
            "price_sources": dict(self.price_sources),
            "duration_s": {**self.durations_s(), "estimate": self.duration_s, "binding": self.binding_limit},
            "assumptions": {
                "input_tokens": "4 characters per token + 4 per message (no tokenizer); "
                                f"±{INPUT_ERROR:.0%} in the cost range",
                "expected_output_share_of_max_tokens": EXPECTED_OUTPUT_SHARE,
                "expected_output_without_max_tokens": ASSUMED_UNBOUNDED_OUTPUT,
                "latency_s_per_request": ASSUMED_LATENCY_S,
                "billed_once": True,
            },
        }

    def lines(self) -> list[str]:
        """The estimate as ``batchrun estimate`` prints it: each figure with how it was made."""
        models = ", ".join(f"{m} ({n:,})" for m, n in self.models.most_common()) or self.model
        out = [f"input {self.input}: {self.lines_read:,} lines read, model {models}"]
        requests = f"requests {self.requests:,}  invalid lines {self.invalid_lines:,}"
        top = self._top_reason()
        if top is not None:
            share = "" if top["lines"] == self.invalid_lines else f" ({top['lines']:,} of them)"
            requests += f": {top['reason']}{share}"
        if self.already_done:
            requests += f"  already done {self.already_done:,} (not sent again)"
        out.append(requests)
        out.append(
            f"input tokens ~{self.input_tokens:,} (estimated: 4 characters per token + 4 per message, "
            f"about ±{INPUT_ERROR:.0%}; no tokenizer)"
        )
        output = f"output tokens at most {self.output_tokens_worst:,} (sum of max_tokens)"
        if self.unbounded:
            output += f"; {self.unbounded:,} requests have no max_tokens: unbounded"
        out.append(output)
        if self.unpriced:
            names = ", ".join(sorted(self.unpriced))
            out.append(
                f"no price known for {names} ({sum(self.unpriced.values()):,} requests): their cost is "
                "left out; add [pricing.\"MODEL\"] prompt_per_m/completion_per_m to the job file"
            )
        priced = [f"{m} from {where}" for m, where in self.price_sources.items() if where]
        if priced:
            out.append("prices: " + "; ".join(priced))
        worst = f"${self.cost_worst:.6f}" if self.worst_bounded else (
            f"unbounded (${self.cost_worst:.6f} for the requests with max_tokens and a price)"
        )
        out.append(f"cost: low ${self.cost_low:.6f}  expected ${self.cost_expected:.6f}  worst {worst}")
        out.append(
            f"  low = input at {1 - INPUT_ERROR:.0%} of the estimate, no output; expected = input + "
            f"{EXPECTED_OUTPUT_SHARE:.0%} of max_tokens"
            + (f" ({ASSUMED_UNBOUNDED_OUTPUT} tokens without one)" if self.unbounded else "")
            + f"; worst = input at {1 + INPUT_ERROR:.0%} + all of max_tokens, each request billed once"
        )
        out.append(self._batch_line())
        out.append(self._duration_line())
        return out

    def _batch_line(self) -> str:
        """The same requests at the batch price (--mode batch), beside the sync figures above."""
        if self.batch_unpriced:
            names = ", ".join(sorted(self.batch_unpriced))
            return (f"batch (--mode batch): no batch price known for {names} (the provider lists it as "
                    f"MODEL:batch in /models; or add [pricing.\"MODEL:batch\"])")
        if not self.requests:
            return "batch (--mode batch): nothing to send"
        bounded = self.unbounded == 0
        worst = f"${self.batch_worst:.6f}" if bounded else "unbounded"
        text = (f"batch (--mode batch): low ${self.batch_low:.6f}  expected ${self.batch_expected:.6f}  "
                f"worst {worst}")
        if self.cost_expected > 0 and not self.unpriced:
            text += f"  ({1 - self.batch_expected / self.cost_expected:.0%} less than sync)"
        priced = sorted({where for where in self.batch_price_sources.values() if where})
        if priced:
            text += "; batch prices from " + "; ".join(priced)
        return text + "; results in minutes to hours"
    def _top_reason(self) -> dict[str, Any] | None:
        """The most common reason lines are invalid, with how many lines give it."""
        if not self.invalid_reasons:
            return None
        reason, lines = self.invalid_reasons.most_common(1)[0]
        return {"reason": reason, "lines": lines}

    def _duration_line(self) -> str:
        durations = self.durations_s()
        at_concurrency = (
            f"at concurrency {self.concurrency} and ~{ASSUMED_LATENCY_S:g} s per request: "
            f"~{duration_text(durations['concurrency'] or 0.0)}"
        )
        if self.rpm is None and self.tpm is None:
            return f"duration: unbounded by rate limits; {at_concurrency}"
        parts = []
        if durations["rpm"] is not None:
            parts.append(f"rpm {self.rpm:g}: ≥ {duration_text(durations['rpm'])}")
        if durations["tpm"] is not None:
            parts.append(
                f"tpm {self.tpm:g}: ≥ {duration_text(durations['tpm'])} ({self.booked_tokens:,} tokens booked)"
            )
        parts.append(at_concurrency)
        return f"duration ~{duration_text(self.duration_s)} (set by {self.binding_limit}); " + "; ".join(parts)


def estimate(config: JobConfig, prices: PriceBook | None = None) -> Estimate:
    """Stream the job's input and add up what a run of ``config`` would send. No network."""
    prices = prices or price_book(config)
    result = Estimate(
        input=str(config.input), model=config.model, rpm=config.rpm, tpm=config.tpm,
        concurrency=config.concurrency,
    )
    # Ids the output already has a result for: a run would not send them again.
    done_ids, _ = result_ids(output_paths(config.output)["results"])
    result.already_done = len(done_ids)
    parser = parser_for(config, skip_ids=done_ids)
    half_of_sync = batch_api(config) == "openai"  # OpenAI documents its batch price: half
    with open_input(config.input) as stream:
        for number, raw in iter_lines(stream):
            if config.limit is not None and result.lines_read >= config.limit:
                break
            result.lines_read += 1
            item = parser.parse(raw, number)
            if item is None:
                continue
            if isinstance(item, InvalidLine):
                result.invalid_lines += 1
                reasons = result.invalid_reasons
                # Capped: reasons that name an id or a column (duplicates, bad JSON) are all different.
                if item.message in reasons or len(reasons) < _MAX_REASONS:
                    reasons[item.message] += 1
                continue
            result.requests += 1
            result.models[item.model] += 1
            if item.model not in result.price_sources:
                result.price_sources[item.model] = prices.source(item.model)
            prompt = item.prompt_tokens_est
            result.input_tokens += prompt
            result.booked_tokens += item.est_tokens
            max_tokens = item.max_tokens
            if max_tokens is None:
                result.unbounded += 1
            else:
                result.output_tokens_worst += max_tokens
            batch_price = prices.batch_price(item.model, half_of_sync=half_of_sync)
            if item.model not in result.batch_price_sources:
                result.batch_price_sources[item.model] = prices.batch_source(
                    item.model, half_of_sync=half_of_sync)
            if batch_price is None:
                result.batch_unpriced[item.model] += 1
            else:
                batch = estimate_cost(prompt, max_tokens, batch_price, unbounded_output=ASSUMED_UNBOUNDED_OUTPUT)
                result.batch_low += batch.low
                result.batch_expected += batch.expected
                if max_tokens is not None:  # the worst case is a ceiling only where max_tokens is known
                    result.batch_worst += batch.high
            price = prices.get(item.model)
            if price is None:
                result.unpriced[item.model] += 1
                continue
            cost = estimate_cost(prompt, max_tokens, price, unbounded_output=ASSUMED_UNBOUNDED_OUTPUT)
            result.cost_low += cost.low
            result.cost_expected += cost.expected
            if max_tokens is not None:
                result.cost_worst += cost.high
    return result


def price_book(config: JobConfig, *, fetch: bool = False) -> PriceBook:
    """The prices a run of ``config`` would use, without the network unless ``fetch``.

    Without ``fetch`` the provider's list is the one the last run cached (however old: its age is
    stated); with it, ``GET /models`` is asked now and the cache refreshed. The simulator's list is
    its catalog, read in process.
    """
    book = PriceBook(config.pricing, builtin=config.builtin_prices)
    if config.use_sim:
        from batchrun.sim.catalog import (
            models_payload,  # the simulator is only loaded when asked for
        )

        book.load_models_payload(orjson.loads(models_payload()), "the simulator's /models")
        return book
    from batchrun.transport import api_root

    root = api_root(config.base_url)
    if fetch:  # the one network call: asked now, the cache refreshed
        loaded = asyncio.run(load_provider_prices(book, root, lambda: _fetch_models(config), max_age_s=0.0))
        if loaded.source != "fetched":
            raise ConfigError(f"could not fetch prices from {root}/models: no list with prices came back")
    else:  # no network: the list the last run cached, however old (its age is stated)
        asyncio.run(load_provider_prices(book, root, None, max_age_s=None))
    return book


async def _fetch_models(config: JobConfig) -> object:
    from batchrun.transport import Transport

    async with Transport(
        config.base_url, api_key_from_env(config), connections=1, timeout_s=30.0, headers=config.headers
    ) as transport:
        return await transport.get_json("/models")

