"""The provider's model prices (``GET /models``), kept on disk between runs.

OpenRouter's list is hundreds of models and prices change rarely, so one fetch a day serves every
run of every job, and ``batchrun estimate`` can price a job from it without the network. Only the
id and the pricing object of each model are kept. The cache is best effort: a directory that
cannot be written only means the next run fetches again.

Where: ``$BATCHRUN_CACHE_DIR``, else ``$XDG_CACHE_HOME/batchrun``, else ``~/.cache/batchrun``;
one file per API root, so two servers never share prices.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson

from batchrun.pricing import PriceBook
from batchrun.units import duration_text

__all__ = [
    "MAX_AGE_S", "CachedPrices", "PriceLoad", "cache_dir", "cache_file", "load_provider_prices", "read_prices",
    "write_prices",
]

MAX_AGE_S = 24 * 3600.0  # older than this, a run fetches the list again
_FORMAT = 1


@dataclass(frozen=True)
class CachedPrices:
    payload: dict[str, Any]  # a /models body trimmed to {"data": [{"id", "pricing"}]}
    fetched_at: float  # epoch seconds
    path: Path

    def age_s(self, now: float | None = None) -> float:
        return max((time.time() if now is None else now) - self.fetched_at, 0.0)

    def fresh(self, now: float | None = None) -> bool:
        return self.age_s(now) < MAX_AGE_S

    def source(self) -> str:
        """Where its prices come from, in words, for the plan line and ``estimate``."""
        return f"/models, fetched {duration_text(self.age_s())} ago"


def cache_dir() -> Path:
    if explicit := os.environ.get("BATCHRUN_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "batchrun"


def cache_file(api_root: str) -> Path:
    host = urlsplit(api_root).hostname or "server"
    digest = hashlib.sha256(api_root.rstrip("/").encode()).hexdigest()[:12]
    return cache_dir() / f"prices-{host}-{digest}.json"


def read_prices(api_root: str) -> CachedPrices | None:
    """The cached list for this API root, fresh or not; None when there is none or it is unreadable."""
    path = cache_file(api_root)
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or doc.get("api_root") != api_root:
        return None
    payload, fetched_at = doc.get("models"), doc.get("fetched_at")
    if not isinstance(payload, dict) or not isinstance(fetched_at, (int, float)):
        return None
    return CachedPrices(payload, float(fetched_at), path)


def write_prices(api_root: str, payload: Any, now: float | None = None) -> Path | None:
    """Keep the pricing part of a /models body; returns the file, or None when it could not be written."""
    data = payload.get("data") if isinstance(payload, dict) else None
    models = [
        {"id": model.get("id"), "pricing": model.get("pricing")}
        for model in (data if isinstance(data, list) else ())
        if isinstance(model, dict) and isinstance(model.get("pricing"), dict)
    ]
    doc = {
        "format": _FORMAT,
        "api_root": api_root,
        "fetched_at": time.time() if now is None else now,
        "models": {"data": models},
    }
    path = cache_file(api_root)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(orjson.dumps(doc))
        os.replace(tmp, path)  # whole or not at all: a concurrent run never reads half a file
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return None
    return path


async def load_provider_prices(
    book: PriceBook,
    api_root: str,
    fetch: Callable[[], Awaitable[Any]] | None,
    *,
    max_age_s: float | None = MAX_AGE_S,
    use_cache: bool = True,
) -> PriceLoad:
    """Load the provider's prices into ``book``: the one policy, for ``run`` and ``estimate``.

    The cached list is used while younger than ``max_age_s`` (None: whatever its age); else
    ``fetch`` (``GET /models``) is asked and its answer cached; when it brings nothing, a stale
    cached list is used all the same, with a notice for the user.
    """
    cached = read_prices(api_root) if use_cache else None
    if cached is not None and (max_age_s is None or cached.age_s() < max_age_s):
        book.load_models_payload(cached.payload, cached.source())
        return PriceLoad("cache")
    payload = await fetch() if fetch is not None else None
    if payload is not None and book.load_models_payload(payload, "/models, fetched now"):
        if use_cache:
            write_prices(api_root, payload)
        return PriceLoad("fetched")
    if cached is not None:
        book.load_models_payload(cached.payload, cached.source() + ", no fresh list")
        age = duration_text(cached.age_s())
        return PriceLoad("stale", f"could not fetch {api_root}/models: using the list cached {age} ago")
    return PriceLoad("none")


@dataclass(frozen=True)
class PriceLoad:
    """Where ``load_provider_prices`` found the prices, and what to tell the user about it."""

    source: Literal["cache", "fetched", "stale", "none"]
    notice: str | None = None
