"""Settings of the simulator: one frozen value object plus the parser for fault specs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "BATCH_FAULT_KINDS",
    "BATCH_ROW_FAULT_KINDS",
    "DIALECTS",
    "FAULT_KINDS",
    "UPSTREAM_429_HEADERS",
    "Dialect",
    "SimConfig",
    "normalize_kind",
    "parse_faults",
    "parse_rates",
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


# Faults of the batch routes themselves: 429 and 500 answers (nothing created), and `drop`: the
# request is carried out (a create persists its batch) but the connection closes before the reply.
BATCH_FAULT_KINDS: tuple[str, ...] = ("429", "500", "drop")
# Faults of one row of a batch, in seeded-RNG order: rate-limited, server error, timed out upstream
# (OpenRouter's row `error` object), and a 400 in OpenAI's shape (`response.status_code`).
BATCH_ROW_FAULT_KINDS: tuple[str, ...] = ("429", "500", "timeout", "400")


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


def parse_rates(specs: Iterable[str], kinds: tuple[str, ...], flag: str) -> dict[str, float]:
    """Parse `KIND=RATE` strings for one of the batch fault tables, raising ValueError."""
    out: dict[str, float] = {}
    for spec in specs:
        kind, sep, rate_s = spec.partition("=")
        kind = kind.strip().lower()
        if not sep or kind not in kinds:
            raise ValueError(
                f"bad {flag} {spec!r}: expected KIND=RATE with KIND one of {', '.join(kinds)}"
            )
        try:
            rate = float(rate_s)
        except ValueError:
            raise ValueError(f"bad {flag} {spec!r}: rate {rate_s!r} is not a number") from None
        out[kind] = out.get(kind, 0.0) + rate
    _check_rates(out, kinds, flag)
    return out


def _check_rates(rates: Mapping[str, float], kinds: tuple[str, ...], name: str) -> None:
    for kind, rate in rates.items():
        if kind not in kinds:
            raise ValueError(f"{name}: unknown kind {kind!r}; use one of {', '.join(kinds)}")
        if not 0.0 <= rate <= 1.0 or math.isnan(rate):
            raise ValueError(f"{name}: rate for {kind!r} must be between 0 and 1")
    if sum(rates.values()) > 1.0 + 1e-9:
        raise ValueError(f"{name}: rates add up to more than 1")


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
    # -- Batch APIs (batch_store.py): times are seconds after the create's reply ----------------
    batch_api: bool = True  # False: no /batches routes (a server without a Batch API)
    batch_validating_s: float = 0.5  # `validating`, then the second-stage checks run
    batch_processing_s: float = 3.0  # done (`completed`) this long after the create
    batch_visibility_s: float = 1.0  # GET answers 404 and list omits the batch this long
    batch_first_visibility_s: float | None = None  # the first batch's own lag (crash tests)
    batch_list_cache_s: float = 10.0  # list answers cached per query string (the edge cache)
    batch_expiry_s: float | None = None  # None: 24 h (96 h on Google); unfinished rows expire
    batch_cancel_s: float = 0.5  # OpenAI: `cancelling` lasts this long
    batch_row_faults: Mapping[str, float] = field(default_factory=dict)  # BATCH_ROW_FAULT_KINDS
    batch_faults: Mapping[str, float] = field(default_factory=dict)  # BATCH_FAULT_KINDS
    batch_lost_replies: int = 0  # the first N creates persist their batch but drop the reply
    batch_max_requests: int | None = None  # None: 5,000 (OpenRouter) / 50,000 (OpenAI)
    batch_max_bytes: int = 200_000_000
    batch_enqueued_token_limit: int | None = None  # OpenAI: token_limit_exceeded above this

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
        for name in (
            "batch_validating_s",
            "batch_processing_s",
            "batch_visibility_s",
            "batch_list_cache_s",
            "batch_cancel_s",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("batch_first_visibility_s", "batch_expiry_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 (or None)")
        if self.batch_max_bytes <= 0 or (self.batch_max_requests or 1) <= 0:
            raise ValueError("batch_max_bytes and batch_max_requests must be > 0")
        _check_rates(self.batch_row_faults, BATCH_ROW_FAULT_KINDS, "batch_row_faults")
        _check_rates(self.batch_faults, BATCH_FAULT_KINDS, "batch_faults")
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
