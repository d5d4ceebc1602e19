"""Model prices and the cost of one response.

Where the provider reports ``usage.cost`` (OpenRouter does on every response) that is the truth
(``cost_source: "provider"``). Otherwise tokens × the model's price (``"price_table"``): prices come
from the job's ``[pricing]``, then the provider's ``GET /models`` when fetched, then the small
built-in table below; with no price the cost is ``"unknown"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BUILTIN_PRICES", "Price", "PriceBook", "response_cost", "usage_of"]


@dataclass(frozen=True, slots=True)
class Price:
    """USD per token."""

    prompt: float
    completion: float
    cached_prompt: float | None = None  # cache reads; None means the prompt price

    @classmethod
    def per_million(cls, prompt: float, completion: float, cached: float | None = None) -> Price:
        return cls(prompt / 1e6, completion / 1e6, None if cached is None else cached / 1e6)

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        cached_price = self.prompt if self.cached_prompt is None else self.cached_prompt
        uncached = max(prompt_tokens - cached_tokens, 0)
        return uncached * self.prompt + cached_tokens * cached_price + completion_tokens * self.completion


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


class PriceBook:
    """Looks a model's price up: job overrides, then the provider's list, then the built-in table."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self._overrides = dict(overrides or {})
        self._provider: dict[str, Price] = {}

    def get(self, model: str | None) -> Price | None:
        if not model:
            return None
        return self._overrides.get(model) or self._provider.get(model) or BUILTIN_PRICES.get(model)

    def load_models_payload(self, payload: Any) -> int:
        """Take prices from an OpenRouter ``GET /models`` body (USD per token, as strings)."""
        loaded = 0
        data = payload.get("data") if isinstance(payload, dict) else None
        for model in data if isinstance(data, list) else ():
            try:
                pricing = model["pricing"]
                cached = pricing.get("input_cache_read")
                price = Price(
                    float(pricing["prompt"]),
                    float(pricing["completion"]),
                    None if cached in (None, "") else float(cached),
                )
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            if price.prompt >= 0 and price.completion >= 0:  # "-1" marks a router with no fixed price
                self._provider[str(model.get("id"))] = price
                loaded += 1
        return loaded


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
    if usage is None:
        return {
            "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0,
            "reasoning_tokens": 0, "cost_usd": None, "cost_source": "unknown",
        }
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    total = _int(usage.get("total_tokens")) or prompt + completion
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = _int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
    reasoning = (
        _int(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
    )
    cost = usage.get("cost")
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        cost_usd: float | None = float(cost)
        source = "provider"
    elif (price := prices.get(model)) is not None:
        cost_usd = price.cost(prompt, completion, cached)
        source = "price_table"
    else:
        cost_usd, source = None, "unknown"
    return {
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total,
        "cached_tokens": cached, "reasoning_tokens": reasoning, "cost_usd": cost_usd,
        "cost_source": source,
    }
