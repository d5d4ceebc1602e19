"""One Batch API call over the job's connection pool, retried where a retry cannot duplicate work.

GETs and DELETEs are retried on 429 (after the server's Retry-After when it gives one), 408, 5xx
and no answer, with exponential backoff and full jitter. A create is sent once: what happens
after an ambiguous answer is the runner's to decide (it looks for the batch first).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from batchrun.batch.info import ApiReply, parse_reply
from batchrun.errors import TransportFailure
from batchrun.retry import backoff, parse_retry_after
from batchrun.transport import Transport

__all__ = ["SEND_ATTEMPTS", "BatchWire", "error_message", "lowercase"]

SEND_ATTEMPTS = 8


def lowercase(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in dict(headers).items()}


def error_message(reply: ApiReply) -> str:
    """The message of an error answer, in either provider's envelope (or its text)."""
    body = reply.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    if isinstance(body, str) and body.strip():
        return body.strip()[:300]
    return f"HTTP {reply.status}"


class BatchWire:
    """Sends Batch API calls; ``pause`` sleeps (and raises when the job is stopped meanwhile)."""

    def __init__(
        self, transport: Transport, *, pause: Callable[[float], Awaitable[None]],
        backoff_base_s: float, backoff_cap_s: float,
    ) -> None:
        self._transport = transport
        self._pause = pause
        self._base = backoff_base_s
        self._cap = backoff_cap_s

    def backoff(self, attempt: int) -> float:
        return backoff(attempt, base=self._base, cap=self._cap)

    async def send(
        self, method: str, path: str, *, data: bytes | None = None, content_type: str | None = None,
        params: Mapping[str, Any] | None = None, retry: bool = True,
    ) -> ApiReply:
        """One call; with ``retry`` (GET, DELETE, a file upload) transient answers are tried again."""
        query = {k: str(v) for k, v in (params or {}).items()} or None
        attempt = 0
        while True:
            attempt += 1
            try:
                status, headers, raw = await self._transport.request(
                    method, path, data=data, content_type=content_type or "application/json", params=query,
                )
            except TransportFailure:
                if not retry or attempt >= SEND_ATTEMPTS:
                    raise
                await self._pause(self.backoff(attempt))
                continue
            reply = parse_reply(status, headers, raw)
            if not retry or attempt >= SEND_ATTEMPTS or not (status in (408, 429) or status >= 500):
                return reply
            wait = parse_retry_after(lowercase(headers), reply.body, time.time())
            await self._pause(wait if wait is not None else self.backoff(attempt))
