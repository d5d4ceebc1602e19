"""The simulated model catalog: ids, providers, context sizes and per-token prices."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import orjson

__all__ = [
    "BATCH_DISCOUNT",
    "BATCH_SUFFIX",
    "CATALOG",
    "DEFAULT_MODEL",
    "Model",
    "batch_variant",
    "models_payload",
    "openai_models_payload",
    "price_string",
]

DEFAULT_MODEL = "google/gemini-2.0-flash-lite-001"

_PER_M = 1e-6
# Batch endpoints bill about half the sync price (batch-wire A10, B5); `:batch` is their catalog id.
BATCH_DISCOUNT = 0.5
BATCH_SUFFIX = ":batch"


@dataclass(frozen=True, slots=True)
class Model:
    """One catalog entry; prices are USD per token, as floats.

    `providers` lists every provider that serves the model, best first; `provider` is the one
    serving this request (the first unless provider preferences chose another, see routing.py).
    """

    id: str
    name: str
    provider: str
    context_length: int
    prompt_price: float
    completion_price: float
    created: int
    max_completion_tokens: int | None = None
    reasoning: bool = False
    retired: bool = False
    fallback_models: tuple[str, ...] = ()
    modality: str = "text->text"
    tokenizer: str = "Other"
    providers: tuple[str, ...] = ()
    # Providers with a `:batch` endpoint for this model, best (cheapest) first; empty: no batch.
    batch_providers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.providers:
            object.__setattr__(self, "providers", (self.provider,))
        if self.provider not in self.providers:
            raise ValueError(f"{self.id}: provider {self.provider!r} is not in {self.providers}")
        if not set(self.batch_providers) <= set(self.providers):
            raise ValueError(f"{self.id}: batch providers {self.batch_providers} not in providers")

    @property
    def cache_read_price(self) -> float:
        """Price of a cached prompt token: a quarter of the prompt price, as Gemini and GPT do."""
        return self.prompt_price / 4

    @property
    def native_stop(self) -> tuple[str, str]:
        """The model API's own spelling of (stop, length) finish reasons, whoever hosts it."""
        if self.tokenizer == "Gemini":
            return ("STOP", "MAX_TOKENS")
        if self.tokenizer == "Claude":
            return ("end_turn", "max_tokens")
        return ("stop", "length")


_MODELS = (
    Model(
        id="google/gemini-2.0-flash-lite-001",
        name="Google: Gemini 2.0 Flash Lite",
        provider="Google",
        context_length=1_048_576,
        prompt_price=0.075 * _PER_M,
        completion_price=0.30 * _PER_M,
        created=1740506212,
        max_completion_tokens=8192,
        tokenizer="Gemini",
        providers=("Google", "Google AI Studio"),
        batch_providers=("Google",),
    ),
    Model(
        id="openai/gpt-4o-mini",
        name="OpenAI: GPT-4o-mini",
        provider="OpenAI",
        context_length=128_000,
        prompt_price=0.15 * _PER_M,
        completion_price=0.60 * _PER_M,
        created=1721260800,
        max_completion_tokens=16384,
        tokenizer="GPT",
        providers=("OpenAI", "Azure"),
        batch_providers=("OpenAI",),
    ),
    Model(
        id="anthropic/claude-3.5-haiku",
        name="Anthropic: Claude 3.5 Haiku",
        provider="Anthropic",
        context_length=200_000,
        prompt_price=0.80 * _PER_M,
        completion_price=4.00 * _PER_M,
        created=1730678400,
        max_completion_tokens=8192,
        tokenizer="Claude",
        providers=("Anthropic", "Amazon Bedrock"),
        batch_providers=("Anthropic", "Amazon Bedrock"),
    ),
    Model(
        id="meta-llama/llama-3.1-8b-instruct:free",
        name="Meta: Llama 3.1 8B Instruct (free)",
        provider="Chutes",
        context_length=131_072,
        prompt_price=0.0,
        completion_price=0.0,
        created=1721692800,
        tokenizer="Llama3",
    ),
    Model(
        id="deepseek/deepseek-r1",
        name="DeepSeek: R1",
        provider="DeepInfra",
        context_length=163_840,
        prompt_price=0.40 * _PER_M,
        completion_price=2.00 * _PER_M,
        created=1737381095,
        reasoning=True,
        tokenizer="DeepSeek",
        providers=("DeepInfra", "Together"),
    ),
    Model(
        id="google/gemini-1.5-flash",
        name="Google: Gemini 1.5 Flash",
        provider="Google",
        context_length=1_000_000,
        prompt_price=0.075 * _PER_M,
        completion_price=0.30 * _PER_M,
        created=1715644800,
        retired=True,
        fallback_models=("google/gemini-2.0-flash-lite-001",),
        tokenizer="Gemini",
    ),
)

CATALOG: Mapping[str, Model] = MappingProxyType({m.id: m for m in _MODELS})


def batch_variant(model: Model) -> Model:
    """Return the model as its batch endpoint bills it: the same id, half the per-token prices."""
    return replace(
        model,
        prompt_price=model.prompt_price * BATCH_DISCOUNT,
        completion_price=model.completion_price * BATCH_DISCOUNT,
    )


def price_string(usd_per_token: float) -> str:
    """Format a per-token price the way OpenRouter does: plain decimal, no exponent."""
    if usd_per_token == 0:
        return "0"
    return f"{usd_per_token:.14f}".rstrip("0").rstrip(".")


def _model_json(m: Model) -> dict[str, Any]:
    return {
        "id": m.id,
        "canonical_slug": m.id,
        "name": m.name,
        "created": m.created,
        "description": f"{m.name} (simulated).",
        "context_length": m.context_length,
        "architecture": {
            "modality": m.modality,
            "input_modalities": ["text"],
            "output_modalities": ["text"],
            "tokenizer": m.tokenizer,
            "instruct_type": None,
        },
        "pricing": {
            "prompt": price_string(m.prompt_price),
            "completion": price_string(m.completion_price),
            "request": "0",
            "image": "0",
            "web_search": "0",
            "internal_reasoning": "0",
            "input_cache_read": price_string(m.cache_read_price),
        },
        "top_provider": {
            "context_length": m.context_length,
            "max_completion_tokens": m.max_completion_tokens,
            "is_moderated": m.provider in ("OpenAI", "Anthropic"),
        },
        "per_request_limits": None,
        "supported_parameters": [
            "max_tokens",
            "temperature",
            "top_p",
            "stop",
            "seed",
            "response_format",
            "structured_outputs",
            "tools",
            "tool_choice",
            *(["reasoning", "include_reasoning"] if m.reasoning else []),
        ],
    }


def _batch_json(m: Model) -> dict[str, Any]:
    # A catalog variant of its own, as `anthropic/claude-haiku-4.5:batch` is (batch-wire A3.3).
    doc = _model_json(batch_variant(m))
    doc["id"] = doc["canonical_slug"] = m.id + BATCH_SUFFIX
    doc["name"] = f"{m.name} (batch)"
    return doc


# Built once at import: GET /models is then a constant byte string.
_MODELS_BODY = orjson.dumps({
    "data": [_model_json(m) for m in _MODELS if not m.retired]
    + [_batch_json(m) for m in _MODELS if not m.retired and m.batch_providers]
})


def models_payload() -> bytes:
    """Return the JSON body of GET /models (retired models are not listed, as on OpenRouter)."""
    return _MODELS_BODY


_OPENAI_MODELS_BODY = orjson.dumps({
    "object": "list",
    "data": [
        {"id": m.id, "object": "model", "created": m.created, "owned_by": m.provider.lower()}
        for m in _MODELS if not m.retired
    ],
})


def openai_models_payload() -> bytes:
    """GET /v1/models as OpenAI, vLLM and llama.cpp's server answer it: ids, no prices."""
    return _OPENAI_MODELS_BODY
