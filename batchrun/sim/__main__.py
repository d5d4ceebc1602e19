"""Command line of the simulator: `python -m batchrun.sim --port 0 --fault 500=0.01 ...`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from .config import (
    BATCH_FAULT_KINDS,
    BATCH_ROW_FAULT_KINDS,
    DIALECTS,
    UPSTREAM_429_HEADERS,
    SimConfig,
    parse_faults,
    parse_rates,
)
from .process import LISTENING_PREFIX
from .server import new_event_loop, serve, server_ssl_context

__all__ = ["config_from_args", "main", "parser", "serve_forever"]


def parser() -> argparse.ArgumentParser:
    """Return the argument parser for the simulator's flags."""
    p = argparse.ArgumentParser(prog="python -m batchrun.sim", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added before answering")
    p.add_argument("--jitter", type=float, default=0.0, help="uniform extra latency, seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rpm", type=float, default=None)
    p.add_argument("--tpm", type=float, default=None)
    p.add_argument("--rate-window", type=float, default=60.0, help="sliding window, seconds")
    p.add_argument("--fault", action="append", default=[], metavar="KIND=RATE")
    p.add_argument("--retry-after", type=float, default=1.0, help="Retry-After of injected faults")
    p.add_argument(
        "--upstream-429-headers",
        choices=UPSTREAM_429_HEADERS,
        default="retry-after",
        help="how the 429 fault (an upstream provider's) carries X-RateLimit-*: not at all, in "
        "the headers, in error.metadata.headers, or the three in turn (mix)",
    )
    p.add_argument(
        "--no-rate-retry-after", action="store_true", help="omit Retry-After on rpm/tpm 429s"
    )
    p.add_argument("--api-key", action="append", default=None, help="accept only these keys")
    p.add_argument("--credits", type=float, default=None, help="USD; 402 once billed reaches it")
    p.add_argument("--key-limit", type=float, default=None, help="USD reported by GET /key")
    p.add_argument("--dialect", choices=DIALECTS, default="openrouter")
    p.add_argument("--hang", type=float, default=3600.0, help="seconds a hang fault sleeps")
    p.add_argument("--no-cost", action="store_true", help="send usage.cost as null")
    p.add_argument("--tls-cert", metavar="FILE", help="PEM certificate (chain): serve HTTPS")
    p.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    b = p.add_argument_group("Batch APIs", "seconds count from the create's reply")
    b.add_argument("--no-batch-api", action="store_true", help="serve no /batches routes")
    b.add_argument("--batch-validating", type=float, default=0.5, metavar="S")
    b.add_argument("--batch-processing", type=float, default=3.0, metavar="S",
                   help="a batch is done this long after its create")
    b.add_argument("--batch-visibility", type=float, default=1.0, metavar="S",
                   help="GET 404s and list omits a new batch this long")
    b.add_argument("--batch-first-visibility", type=float, default=None, metavar="S",
                   help="the first batch's own visibility lag")
    b.add_argument("--batch-list-cache", type=float, default=10.0, metavar="S",
                   help="list answers cached per query string")
    b.add_argument("--batch-expiry", type=float, default=None, metavar="S",
                   help="rows not run by then expire (default 24 h, 96 h on Google)")
    b.add_argument("--batch-cancel", type=float, default=0.5, metavar="S",
                   help="OpenAI: how long cancelling lasts")
    b.add_argument("--batch-row-fault", action="append", default=[], metavar="KIND=RATE",
                   help=f"row faults: {', '.join(BATCH_ROW_FAULT_KINDS)}")
    b.add_argument("--batch-fault", action="append", default=[], metavar="KIND=RATE",
                   help=f"batch-route faults: {', '.join(BATCH_FAULT_KINDS)}")
    b.add_argument("--batch-lost-replies", type=int, default=0, metavar="N",
                   help="the first N creates persist their batch but drop the reply")
    b.add_argument("--batch-max-requests", type=int, default=None, metavar="N")
    b.add_argument("--batch-max-bytes", type=int, default=200_000_000, metavar="N")
    b.add_argument("--batch-token-limit", type=int, default=None, metavar="N",
                   help="OpenAI: enqueued tokens per model before token_limit_exceeded")
    return p


def config_from_args(argv: list[str] | None = None) -> SimConfig:
    """Parse flags into a SimConfig; argparse exits with status 2 on a bad flag."""
    p = parser()
    a = p.parse_args(argv)
    try:
        config = SimConfig(
            host=a.host,
            port=a.port,
            latency_s=a.latency,
            latency_jitter_s=a.jitter,
            seed=a.seed,
            rpm=a.rpm,
            tpm=a.tpm,
            rate_window_s=a.rate_window,
            faults=parse_faults(a.fault),
            retry_after_s=a.retry_after,
            upstream_429_headers=a.upstream_429_headers,
            rate_retry_after=not a.no_rate_retry_after,
            api_keys=frozenset(a.api_key) if a.api_key else None,
            credits_usd=a.credits,
            key_limit_usd=a.key_limit,
            dialect=a.dialect,
            hang_s=a.hang,
            report_cost=not a.no_cost,
            tls_cert=a.tls_cert,
            tls_key=a.tls_key,
            batch_api=not a.no_batch_api,
            batch_validating_s=a.batch_validating,
            batch_processing_s=a.batch_processing,
            batch_visibility_s=a.batch_visibility,
            batch_first_visibility_s=a.batch_first_visibility,
            batch_list_cache_s=a.batch_list_cache,
            batch_expiry_s=a.batch_expiry,
            batch_cancel_s=a.batch_cancel,
            batch_row_faults=parse_rates(
                a.batch_row_fault, BATCH_ROW_FAULT_KINDS, "--batch-row-fault"
            ),
            batch_faults=parse_rates(a.batch_fault, BATCH_FAULT_KINDS, "--batch-fault"),
            batch_lost_replies=a.batch_lost_replies,
            batch_max_requests=a.batch_max_requests,
            batch_max_bytes=a.batch_max_bytes,
            batch_enqueued_token_limit=a.batch_token_limit,
        )
    except ValueError as exc:
        p.error(str(exc))
    try:  # a bad PEM file is a usage error, not a traceback once serving starts
        server_ssl_context(config)
    except OSError as exc:  # ssl.SSLError included
        p.error(f"cannot load --tls-cert {a.tls_cert} with --tls-key {a.tls_key}: {exc}")
    return config


async def _serve_until_signal(config: SimConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: no loop signal handlers
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    async with serve(config) as handle:
        print(f"{LISTENING_PREFIX}{handle.base_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; return the exit status."""
    return serve_forever(config_from_args(argv))


def serve_forever(config: SimConfig) -> int:
    """Serve ``config`` until SIGTERM or SIGINT (``batchrun sim`` calls this too); returns 0."""
    loop = new_event_loop()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            loop.run_until_complete(_serve_until_signal(config))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
