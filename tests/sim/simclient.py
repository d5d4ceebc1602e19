"""Small synchronous HTTP helpers for talking to a simulator over loopback in tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

__all__ = ["Answer", "call", "calls", "user"]


@dataclass
class Answer:
    """What the client saw: status, headers and raw body."""

    status: int
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        """Parse the body as JSON (leading whitespace allowed, as real clients must)."""
        return orjson.loads(self.raw.strip())


def user(text: str, **extra: Any) -> dict[str, Any]:
    """Return a chat body with one user message."""
    return {"messages": [{"role": "user", "content": text}], **extra}


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    body: Any,
    headers: dict[str, str],
    method: str,
) -> Answer:
    data = body if isinstance(body, bytes) else None if body is None else orjson.dumps(body)
    async with session.request(method, url, data=data, headers=headers) as resp:
        raw = await resp.read()
        return Answer(resp.status, dict(resp.headers), raw)


def calls(
    base_url: str,
    bodies: list[Any],
    *,
    path: str = "/chat/completions",
    key: str | None = "sk-test",
    fault: str | None = None,
    method: str = "POST",
    timeout: float = 10.0,
) -> list[Answer]:
    """Send the bodies concurrently and return the answers in order."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if fault is not None:
        headers["X-Sim-Fault"] = fault

    async def main() -> list[Answer]:
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            return list(
                await asyncio.gather(
                    *(_one(session, base_url + path, b, headers, method) for b in bodies)
                )
            )

    return asyncio.run(main())


def call(base_url: str, body: Any = None, **kw: Any) -> Answer:
    """Send one request and return the answer."""
    return calls(base_url, [body], **kw)[0]
