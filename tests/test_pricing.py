"""pricing.py: the cost of a response, and where a model's price comes from."""

from __future__ import annotations

from typing import Any

import pytest

from batchrun.pricing import BUILTIN_PRICES, Price, PriceBook, response_cost, usage_of

LITE = "google/gemini-2.0-flash-lite-001"


@pytest.mark.parametrize(
    ("price", "tokens", "cost"),
    [
        (Price.per_million(0.075, 0.30, 0.01875), (1000, 200, 0), 0.000075 + 0.00006),
        (Price.per_million(0.075, 0.30, 0.01875), (1000, 200, 400), 600 * 0.075e-6 + 400 * 0.01875e-6 + 0.00006),
        (Price.per_million(1.0, 2.0), (1000, 0, 400), 0.001),  # no cached price: cached reads cost the prompt price
        (Price.per_million(1.0, 2.0, 0.0), (1000, 10, 1000), 0.00002),
        (Price.per_million(1.0, 2.0, 0.5), (100, 0, 500), 0.00025),  # more cached than prompt: no negative part
        (Price(0.0, 0.0), (10**6, 10**6, 0), 0.0),
    ],
)
def test_price_cost(price: Price, tokens: tuple[int, int, int], cost: float) -> None:
    assert price.cost(*tokens) == pytest.approx(cost, rel=1e-12, abs=1e-18)


WITH_CLASSES = Price.per_million(1.0, 4.0, 0.25, cache_write=1.25, reasoning=8.0, request=0.001)


@pytest.mark.parametrize(
    ("price", "tokens", "cost"),
    [
        # (prompt, completion, cache reads, cache writes, reasoning): reads and writes are inside
        # the prompt, reasoning inside the completion.
        (WITH_CLASSES, (1000, 100, 200, 300, 40),
         (500 * 1.0 + 200 * 0.25 + 300 * 1.25 + 60 * 4.0 + 40 * 8.0) / 1e6 + 0.001),
        (WITH_CLASSES, (0, 0, 0, 0, 0), 0.001),  # the per-request fee is billed even for nothing
        (Price.per_million(1.0, 4.0), (1000, 100, 0, 300, 40), (1000 * 1.0 + 100 * 4.0) / 1e6),  # no own prices
        (WITH_CLASSES, (0, 10, 0, 0, 50), 10 * 8.0 / 1e6 + 0.001),  # more reasoning than completion: capped
    ],
)
def test_price_cost_of_each_token_class(price: Price, tokens: tuple[int, ...], cost: float) -> None:
    assert price.cost(*tokens) == pytest.approx(cost, rel=1e-12)


def test_per_million_converts_to_per_token() -> None:
    assert Price.per_million(0.15, 0.60, 0.075) == Price(0.15e-6, 0.60e-6, 0.075e-6)
    assert Price.per_million(3, 15).cached_prompt is None


def models_payload(*models: Any) -> dict[str, Any]:
    return {"data": list(models)}


def test_price_book_precedence_override_then_provider_then_builtin() -> None:
    override = Price.per_million(9.0, 9.0)
    book = PriceBook({LITE: override})
    assert book.get(LITE) == override
    assert book.get("openai/gpt-4o-mini") == BUILTIN_PRICES["openai/gpt-4o-mini"]
    loaded = book.load_models_payload(models_payload(
        {"id": LITE, "pricing": {"prompt": "0.000001", "completion": "0.000002"}},
        {"id": "openai/gpt-4o-mini", "pricing": {"prompt": "0.0000002", "completion": "0.0000008",
                                                 "input_cache_read": "0.0000001"}},
    ))
    assert loaded == 2
    assert book.get(LITE) == override  # the job's [pricing] still wins
    assert book.get("openai/gpt-4o-mini") == Price(0.0000002, 0.0000008, 0.0000001)  # /models beats builtin
    assert book.get("anthropic/claude-3.5-haiku") == BUILTIN_PRICES["anthropic/claude-3.5-haiku"]
    assert book.get("nobody/knows") is None
    assert book.get(None) is None and book.get("") is None


def test_a_free_override_is_still_an_override() -> None:
    book = PriceBook({LITE: Price(0.0, 0.0)})
    assert book.get(LITE) == Price(0.0, 0.0)


def test_load_models_payload_reads_openrouter_strings_and_skips_what_it_cannot_price() -> None:
    book = PriceBook()
    loaded = book.load_models_payload(models_payload(
        {"id": "a/one", "pricing": {"prompt": "0.000000075", "completion": "0.0000003",
                                    "input_cache_read": "0.00000001875", "request": "0", "image": "0"}},
        {"id": "a/free:free", "pricing": {"prompt": "0", "completion": "0", "input_cache_read": ""}},
        {"id": "openrouter/auto", "pricing": {"prompt": "-1", "completion": "-1"}},  # a router: no fixed price
        {"id": "a/no-pricing"},
        {"id": "a/bad", "pricing": {"prompt": "cheap", "completion": "0.1"}},
        {"id": "a/missing-completion", "pricing": {"prompt": "0.1"}},
        {"id": "a/pricing-not-object", "pricing": "0.1"},
        "not a model",
    ))
    assert loaded == 2
    assert book.get("a/one") == Price(0.000000075, 0.0000003, 0.00000001875)
    assert book.get("a/free:free") == Price(0.0, 0.0, None)
    for model in ("openrouter/auto", "a/no-pricing", "a/bad", "a/missing-completion", "a/pricing-not-object"):
        assert book.get(model) is None


@pytest.mark.parametrize(
    ("pricing", "price"),
    [
        ({"prompt": "0.000001", "completion": "0.000004", "internal_reasoning": "0"}, Price(1e-6, 4e-6)),
        ({"prompt": "0.000001", "completion": "0.000004", "internal_reasoning": "0.000008"},
         Price(1e-6, 4e-6, reasoning=8e-6)),
        ({"prompt": "0.000001", "completion": "0.000004", "input_cache_read": "0.00000025",
          "input_cache_write": "0.00000125", "request": "0.001"},
         Price(1e-6, 4e-6, 0.25e-6, 1.25e-6, None, 0.001)),
    ],
)
def test_models_listing_prices_each_token_class(pricing: dict[str, str], price: Price) -> None:
    book = PriceBook()
    assert book.load_models_payload(models_payload({"id": "m", "pricing": pricing})) == 1
    assert book.get("m") == price


def test_reasoning_and_cache_writes_are_priced_from_usage_when_there_is_no_cost() -> None:
    book = PriceBook({"m": WITH_CLASSES})
    usage = {
        "prompt_tokens": 1000, "completion_tokens": 100,
        "prompt_tokens_details": {"cached_tokens": 200, "cache_write_tokens": 300},
        "completion_tokens_details": {"reasoning_tokens": 40},
    }
    block = response_cost(usage, "m", book)
    assert block["cost_source"] == "price_table"
    assert block["reasoning_tokens"] == 40 and block["cached_tokens"] == 200
    assert block["cost_usd"] == pytest.approx(WITH_CLASSES.cost(1000, 100, 200, 300, 40), rel=1e-12)


@pytest.mark.parametrize("payload", [None, [], {}, {"data": None}, {"data": "x"}, "text"])
def test_load_models_payload_of_a_bad_body_loads_nothing(payload: Any) -> None:
    assert PriceBook().load_models_payload(payload) == 0


def test_response_cost_prefers_the_providers_cost() -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52, "cost": 0.0000129,
             "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 7}}
    assert response_cost(usage, LITE, PriceBook()) == {
        "prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52, "cached_tokens": 4,
        "reasoning_tokens": 7, "cost_usd": 0.0000129, "cost_source": "provider",
    }


def test_response_cost_of_zero_from_the_provider_is_a_provider_cost() -> None:
    result = response_cost({"prompt_tokens": 5, "completion_tokens": 0, "cost": 0}, LITE, PriceBook())
    assert (result["cost_usd"], result["cost_source"]) == (0.0, "provider")


@pytest.mark.parametrize("cost", [None, "0.01", True], ids=["null", "string", "bool"])
def test_response_cost_falls_back_to_the_price_table(cost: Any) -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 200, "cost": cost,
             "prompt_tokens_details": {"cached_tokens": 400}}
    result = response_cost(usage, LITE, PriceBook())
    assert result == {
        "prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200, "cached_tokens": 400,
        "reasoning_tokens": 0, "cost_usd": pytest.approx(600 * 0.075e-6 + 400 * 0.01875e-6 + 200 * 0.30e-6),
        "cost_source": "price_table",
    }


def test_response_cost_uses_the_price_book() -> None:
    book = PriceBook({"my/model": Price.per_million(1.0, 2.0)})
    result = response_cost({"prompt_tokens": 10, "completion_tokens": 5}, "my/model", book)
    assert result["cost_usd"] == pytest.approx(0.00002, rel=1e-12)
    assert result["cost_source"] == "price_table"


@pytest.mark.parametrize("model", ["nobody/knows", None])
def test_response_cost_of_an_unknown_model(model: str | None) -> None:
    result = response_cost({"prompt_tokens": 10, "completion_tokens": 5}, model, PriceBook())
    assert result == {
        "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cached_tokens": 0,
        "reasoning_tokens": 0, "cost_usd": None, "cost_source": "unknown",
    }


def test_response_cost_without_usage_is_unknown_not_zero() -> None:
    assert response_cost(None, LITE, PriceBook()) == {
        "prompt_tokens": None, "completion_tokens": None, "total_tokens": None, "cached_tokens": None,
        "reasoning_tokens": None, "cost_usd": None, "cost_source": "unknown",
    }


def test_response_cost_ignores_counts_of_the_wrong_type() -> None:
    usage = {"prompt_tokens": "12", "completion_tokens": True, "total_tokens": None,
             "prompt_tokens_details": None, "completion_tokens_details": "x", "cost": 0.5}
    assert response_cost(usage, LITE, PriceBook()) == {
        "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0,
        "reasoning_tokens": 0, "cost_usd": 0.5, "cost_source": "provider",
    }


@pytest.mark.parametrize(
    ("body", "usage"),
    [
        ({"usage": {"prompt_tokens": 1}}, {"prompt_tokens": 1}),
        ({"usage": None}, None),
        ({}, None),
        ("<html>", None),
        (None, None),
    ],
)
def test_usage_of(body: Any, usage: Any) -> None:
    assert usage_of(body) == usage
