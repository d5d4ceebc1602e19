"""Model prices and the cost of one response.

Where the provider reports ``usage.cost`` (OpenRouter does on every response) that is the truth
(``cost_source: "provider"``). Otherwise tokens × the model's price (``"price_table"``): prices come
from the job's ``[pricing]``, then the provider's ``GET /models`` when fetched, then the small
built-in table below; with no price the cost is ``"unknown"``.

Token classes are priced the way OpenRouter bills them: cache reads and cache writes are part of
``prompt_tokens`` and each has its own price when the model lists one; reasoning tokens are part
of ``completion_tokens`` and cost the completion price unless the model lists a non-zero
``internal_reasoning`` price (OpenRouter lists "0" for models that bill reasoning as output).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BATCH_DISCOUNT", "BUILTIN_PRICES", "Price", "PriceBook", "price_from_listing", "response_cost", "usage_of"]


@dataclass(frozen=True, slots=True)
class Price:
    """USD per token (``request``: USD per request); None means "as the plain prompt or completion"."""

    prompt: float
    completion: float
    cached_prompt: float | None = None  # cache reads
    cache_write: float | None = None
    reasoning: float | None = None
    request: float = 0.0

    @classmethod
    def per_million(
        cls, prompt: float, completion: float, cached: float | None = None, *,
        cache_write: float | None = None, reasoning: float | None = None, request: float = 0.0,
    ) -> Price:
        def per_token(value: float | None) -> float | None:
            return None if value is None else value / 1e6

        return cls(
            prompt / 1e6, completion / 1e6, per_token(cached), per_token(cache_write),
            per_token(reasoning), request,
        )

    def cost(
        self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
        cache_write_tokens: int = 0, reasoning_tokens: int = 0,
    ) -> float:
        cached_price = self.prompt if self.cached_prompt is None else self.cached_prompt
        write_price = self.prompt if self.cache_write is None else self.cache_write
        reasoning_price = self.completion if self.reasoning is None else self.reasoning
        uncached = max(prompt_tokens - cached_tokens - cache_write_tokens, 0)
        reasoning = min(reasoning_tokens, completion_tokens)
        return (
            uncached * self.prompt + cached_tokens * cached_price + cache_write_tokens * write_price
            + (completion_tokens - reasoning) * self.completion + reasoning * reasoning_price
            + self.request
        )


# Checked against OpenRouter's model pages; a fallback only: /models and [pricing] win.
BUILTIN_PRICES: Mapping[str, Price] = {
    "google/gemini-2.0-flash-lite-001": Price.per_million(0.075, 0.30, 0.01875),
    "google/gemini-2.0-flash-001": Price.per_million(0.10, 0.40, 0.025),
    "openai/gpt-4o-mini": Price.per_million(0.15, 0.60, 0.075),
    "gpt-4o-mini": Price.per_million(0.15, 0.60, 0.075),
    "openai/gpt-4o": Price.per_million(2.50, 10.00, 1.25),
    "gpt-4o": Price.per_million(2.50, 10.00, 1.25),
    "anthropic/claude-3.5-haiku": Price.per_million(0.80, 4.00, 0.08),
    "meta-llama/llama-3.1-8b-instruct:free": Price.per_million(0.0, 0.0),
}


BATCH_DISCOUNT = 0.5  # OpenAI's Batch API price: half the standard one


def _scaled(price: Price, factor: float) -> Price:
    def times(value: float | None) -> float | None:
        return None if value is None else value * factor

    return Price(
        price.prompt * factor, price.completion * factor, times(price.cached_prompt),
        times(price.cache_write), times(price.reasoning), price.request * factor,
    )


class PriceBook:
    """Looks a model's price up: job overrides, then the provider's list, then the built-in table."""

    def __init__(self, overrides: Mapping[str, Price] | None = None, *, builtin: bool = True) -> None:
        """``builtin=False``: the built-in table (OpenRouter's and OpenAI's prices) does not apply,
        as on a self-hosted server, where a model's name says nothing of what it costs."""
        self._overrides = dict(overrides or {})
        self._provider: dict[str, Price] = {}
        self._builtin = BUILTIN_PRICES if builtin else {}
        self.provider_source = "the provider's /models"  # how the provider's list was got

    def get(self, model: str | None) -> Price | None:
        if not model:
            return None
        return self._overrides.get(model) or self._provider.get(model) or self._builtin.get(model)

    def batch_price(self, model: str | None, *, half_of_sync: bool = False) -> Price | None:
        """The model's Batch API price: its ``<model>:batch`` entry (job ``[pricing]``, then the
        provider's ``/models``); else, with ``half_of_sync`` (OpenAI documents 50 %), half its price.

        None when no batch price is known: OpenRouter's discount differs by model, so it is not guessed.
        """
        if not model:
            return None
        own = self._overrides.get(model + ":batch") or self._provider.get(model + ":batch")
        if own is not None:
            return own
        sync = self.get(model) if half_of_sync else None
        return None if sync is None else _scaled(sync, BATCH_DISCOUNT)

    def batch_source(self, model: str, *, half_of_sync: bool = False) -> str | None:
        """Where ``batch_price(model)`` comes from, in words; None when there is none."""
        if model + ":batch" in self._overrides:
            return f"the job's [pricing.\"{model}:batch\"]"
        if model + ":batch" in self._provider:
            return f"{self.provider_source} ({model}:batch)"
        if half_of_sync and self.get(model) is not None:
            return f"half of the price from {self.source(model)}"
        return None

    def source(self, model: str) -> str | None:
        """Where ``get(model)`` comes from, in words; None when there is no price."""
        if model in self._overrides:
            return "the job's [pricing]"
        if model in self._provider:
            return self.provider_source
        return "the built-in table" if model in self._builtin else None

    def load_models_payload(self, payload: Any, source: str | None = None) -> int:
        """Take prices from an OpenRouter ``GET /models`` body (USD per token, as strings)."""
        if source is not None:
            self.provider_source = source
        loaded = 0
        data = payload.get("data") if isinstance(payload, dict) else None
        for model in data if isinstance(data, list) else ():
            try:
                price = price_from_listing(model["pricing"])
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            if price is not None:
                self._provider[str(model.get("id"))] = price
                loaded += 1
        return loaded


def price_from_listing(pricing: Mapping[str, Any]) -> Price | None:
    """A ``Price`` from one ``/models`` pricing object; None for a router with no fixed price."""

    def optional(key: str, *, zero_is_none: bool = False) -> float | None:
        value = pricing.get(key)
        if value in (None, ""):
            return None
        number = float(value)
        return None if zero_is_none and number == 0 else number

    price = Price(
        float(pricing["prompt"]),
        float(pricing["completion"]),
        optional("input_cache_read"),
        optional("input_cache_write"),
        # "0" means reasoning is billed as output, not that it is free.
        optional("internal_reasoning", zero_is_none=True),
        optional("request") or 0.0,
    )
    if price.prompt < 0 or price.completion < 0:  # "-1" marks a router such as openrouter/auto
        return None
    return price


def usage_of(body: Any) -> dict[str, Any] | None:
    """The ``usage`` object of a response body, when it has one."""
    if isinstance(body, dict):
        usage = body.get("usage")
        if isinstance(usage, dict):
            return usage
    return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def response_cost(usage: Mapping[str, Any] | None, model: str | None, prices: PriceBook) -> dict[str, Any]:
    """The ``usage`` block of an output record: token counts, ``cost_usd`` and ``cost_source``."""
    if usage is None:  # the server said nothing (a stream without a usage chunk): unknown, not 0
        return {
            "prompt_tokens": None, "completion_tokens": None, "total_tokens": None,
            "cached_tokens": None, "reasoning_tokens": None, "cost_usd": None, "cost_source": "unknown",
        }
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    total = _int(usage.get("total_tokens")) or prompt + completion
    prompt_details = usage.get("prompt_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, dict) else {}
    completion_details = usage.get("completion_tokens_details")
    completion_details = completion_details if isinstance(completion_details, dict) else {}
    cached = _int(prompt_details.get("cached_tokens"))
    reasoning = _int(completion_details.get("reasoning_tokens"))
    cost = usage.get("cost")
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        cost_usd: float | None = float(cost)
        source = "provider"
    elif (price := prices.get(model)) is not None:
        cost_usd = price.cost(
            prompt, completion, cached, _int(prompt_details.get("cache_write_tokens")), reasoning
        )
        source = "price_table"
    else:
        cost_usd, source = None, "unknown"
    return {
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total,
        "cached_tokens": cached, "reasoning_tokens": reasoning, "cost_usd": cost_usd,
        "cost_source": source,
    }
