"""Settings of the simulator: one frozen value object plus the parser for fault specs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DIALECTS",
    "FAULT_KINDS",
    "UPSTREAM_429_HEADERS",
    "Dialect",
    "SimConfig",
    "normalize_kind",
    "parse_faults",
]

Dialect = Literal["openrouter", "openai", "plain"]
DIALECTS: tuple[str, ...] = ("openrouter", "openai", "plain")

# The order is part of the contract: a seeded RNG walks the kinds in this order, so the same seed
# and the same rates give the same fault sequence on every run.
FAULT_KINDS: tuple[str, ...] = (
    "429",
    "500",
    "502",
    "503",
    "504",
    "524",
    "html502",
    "error200",
    "finish_error",
    "empty_choices",
    "whitespace",
    "drop",
    "torn",
    "hang",
    "inflight402",
    "credits402",
    "moderation403",
    "auth401",
)

# How the "429" fault (OpenRouter's upstream 429) carries its limits, the styles OpenRouter sends:
# Retry-After alone; plus X-RateLimit-Limit/-Remaining: 0/-Reset (epoch ms) copied into the
# headers; the same values in error.metadata.headers; or "mix", the three in turn.
UPSTREAM_429_HEADERS: tuple[str, ...] = ("retry-after", "ratelimit", "metadata", "mix")

# Spellings people reach for first; normalised so a spec or a marker does not fail on a dash.
_ALIASES = {
    "error_200": "error200",
    "error-200": "error200",
    "html_502": "html502",
    "finish-error": "finish_error",
    "empty-choices": "empty_choices",
    "in_flight402": "inflight402",
    "inflight_402": "inflight402",
    "credits_402": "credits402",
    "moderation_403": "moderation403",
    "auth_401": "auth401",
}


def normalize_kind(kind: str) -> str | None:
    """Return the canonical fault kind for a spelling, or None when it names no fault."""
    k = kind.strip().lower()
    k = _ALIASES.get(k, k)
    return k if k in FAULT_KINDS else None


def parse_faults(specs: Iterable[str]) -> dict[str, float]:
    """Parse `KIND=RATE` strings into a fault-rate mapping, raising ValueError on a bad spec."""
    out: dict[str, float] = {}
    for spec in specs:
        kind_s, sep, rate_s = spec.partition("=")
        if not sep:
            raise ValueError(f"bad fault spec {spec!r}: expected KIND=RATE, e.g. 500=0.01")
        kind = normalize_kind(kind_s)
        if kind is None:
            raise ValueError(
                f"bad fault spec {spec!r}: unknown kind {kind_s.strip()!r}; "
                f"HINT: use one of {', '.join(FAULT_KINDS)}"
            )
        try:
            rate = float(rate_s)
        except ValueError:
            raise ValueError(f"bad fault spec {spec!r}: rate {rate_s!r} is not a number") from None
        if not 0.0 <= rate <= 1.0 or math.isnan(rate):
            raise ValueError(f"bad fault spec {spec!r}: rate must be between 0 and 1")
        out[kind] = out.get(kind, 0.0) + rate
    _check_total(out)
    return out


def _check_total(faults: Mapping[str, float]) -> None:
    total = sum(faults.values())
    if total > 1.0 + 1e-9:
        raise ValueError(f"fault rates add up to {total:g}; at most one fault per request, so <= 1")


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """How the simulator behaves: address, latency, limits, faults, billing and dialect."""

    host: str = "127.0.0.1"
    port: int = 0
    latency_s: float = 0.0
    latency_jitter_s: float = 0.0
    seed: int = 0
    rpm: float | None = None
    tpm: float | None = None
    rate_window_s: float = 60.0
    faults: Mapping[str, float] = field(default_factory=dict)
    retry_after_s: float = 1.0
    upstream_429_headers: str = "retry-after"  # one of UPSTREAM_429_HEADERS
    rate_retry_after: bool = True
    api_keys: frozenset[str] | None = None
    credits_usd: float | None = None
    key_limit_usd: float | None = None
    dialect: Dialect = "openrouter"
    hang_s: float = 3600.0
    # False: usage.cost is null, which OpenRouter's schema allows (wire §3); clients then price
    # the tokens themselves.
    report_cost: bool = True
    # PEM files; with both set the simulator serves HTTPS, so clients' CA and proxy paths get tested.
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def scheme(self) -> str:
        """Return `https` when the simulator serves TLS, else `http`."""
        return "https" if self.tls_cert is not None else "http"

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both (PEM files) or neither")
        if self.upstream_429_headers not in UPSTREAM_429_HEADERS:
            raise ValueError(
                f"upstream_429_headers must be one of {', '.join(UPSTREAM_429_HEADERS)}, "
                f"not {self.upstream_429_headers!r}"
            )
        if self.dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}, not {self.dialect!r}")
        for name in ("latency_s", "latency_jitter_s", "retry_after_s", "hang_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.rate_window_s <= 0:
            raise ValueError("rate_window_s must be > 0")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 (or None for no limit)")
        canonical: dict[str, float] = {}
        for kind, rate in self.faults.items():
            k = normalize_kind(kind)
            if k is None:
                raise ValueError(
                    f"unknown fault kind {kind!r}; use one of {', '.join(FAULT_KINDS)}"
                )
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate for {kind!r} must be between 0 and 1")
            canonical[k] = canonical.get(k, 0.0) + rate
        _check_total(canonical)
        # Frozen: write the normalised mapping through object.__setattr__ once, here.
        object.__setattr__(self, "faults", canonical)
        if self.api_keys is not None:
            object.__setattr__(self, "api_keys", frozenset(self.api_keys))
