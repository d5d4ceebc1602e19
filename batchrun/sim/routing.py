"""Provider preferences (wire §5, PS): which of a model's providers serves one request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .catalog import Model

__all__ = ["provider_slug", "route"]

# OpenRouter names providers by slug in requests and errors, by display name in responses.
_SLUGS = {"Google": "google-vertex", "Amazon Bedrock": "amazon-bedrock"}


def provider_slug(name: str) -> str:
    """Return the slug OpenRouter uses for a provider's name: `Google AI Studio` → `google-ai-studio`."""
    return _SLUGS.get(name, name.lower().replace(" ", "-"))


def _names(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [v.lower() for v in value if isinstance(v, str)]


def _rank(provider: str, names: list[str]) -> int | None:
    # Slugs and display names are both accepted, case-insensitively.
    for i, name in enumerate(names):
        if name in (provider.lower(), provider_slug(provider)):
            return i
    return None


def _order_key(provider: str, order: list[str]) -> int:
    rank = _rank(provider, order)
    return len(order) if rank is None else rank


def route(model: Model, preferences: Any) -> tuple[str, ...]:
    """Return the providers allowed to serve `model`, in the order they are tried (maybe none).

    `only` keeps, `ignore` removes, `order` tries its providers first and, with
    `allow_fallbacks: false`, no others. The rest of `provider` (sort, max_price, ...) is
    accepted and ignored: every simulated provider has the same price and speed.
    """
    if not isinstance(preferences, Mapping):
        return model.providers
    only, ignore, order = (_names(preferences.get(k)) for k in ("only", "ignore", "order"))
    allowed = [
        p
        for p in model.providers
        if (not only or _rank(p, only) is not None) and _rank(p, ignore) is None
    ]
    if order and preferences.get("allow_fallbacks") is False:
        allowed = [p for p in allowed if _rank(p, order) is not None]
    # sorted() is stable: providers `order` does not name keep the catalog's order, after it.
    return tuple(sorted(allowed, key=lambda p: _order_key(p, order)))
