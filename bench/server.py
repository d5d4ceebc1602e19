"""The bench server: a raw asyncio Protocol HTTP/1.1 keep-alive server on uvloop.

It answers ``POST /v1/chat/completions`` (and ``/api/v1/chat/completions``) with a fixed small
OpenRouter-shaped reply, as cheaply as possible, so that the clients' costs dominate. It parses
Content-Length, reads exact body bytes and answers pipelined requests in order. Options:

* ``latency_ms``: delay each answer with ``loop.call_later`` (never blocking the loop);
* ``rate``: enforce at most this many accepted requests in any sliding 1-second window; above it
  answer 429 with ``Retry-After`` and ``X-RateLimit-Reset`` (epoch ms, as OpenRouter sends);
* ``hidden_rpm``: a limit unknown to the client, ``hidden_rpm / 60`` per sliding 1-second window,
  answered with 429 and ``Retry-After`` only;
* ``upstream_429``: this share of requests (drawn from a seeded RNG) answered, after the latency,
  with the 429 OpenRouter relays from a busy upstream provider ("temporarily rate-limited
  upstream", ``metadata.limit_source``), ``Retry-After: upstream_retry_after`` and, in turn, the
  header styles OpenRouter sends: ``Retry-After`` alone; plus ``X-RateLimit-Limit/-Remaining: 0/
  -Reset`` (epoch ms) copied into the headers; or those values in ``error.metadata.headers``.

It records the arrival time (``time.monotonic``, comparable across processes on Linux) of every
chat request, and serves ``GET /_stats`` (JSON) and ``POST /_reset`` (an optional JSON body sets
new options). Run it with ``python -m bench.server --port 0``; it prints ``PORT <n>`` when ready.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import math
import random
import resource
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import orjson

__all__ = ["Options", "State", "main", "max_in_window"]

_CHAT_PATHS = frozenset({b"/v1/chat/completions", b"/api/v1/chat/completions"})
_MAX_HEAD = 64 * 1024
_REPLY_HEAD = (
    b'{"id":"gen-bench-%d","object":"chat.completion","created":1700000000,'
    b'"model":"bench/model","provider":"Bench","choices":[{"index":0,"logprobs":null,'
    b'"finish_reason":"stop","native_finish_reason":"stop","message":{"role":"assistant",'
    b'"content":"ok, this is a fixed reply","refusal":null}}],"usage":{"prompt_tokens":12,'
    b'"completion_tokens":6,"total_tokens":18,"cost":0.0000024}}'
)
_NOT_FOUND = b'{"error":{"code":404,"message":"no such path"}}'
_RATE_LIMITED = b'{"error":{"code":429,"message":"Rate limit exceeded: bench server limit"}}'
_UPSTREAM_MESSAGE = "bench/model is temporarily rate-limited upstream. Please retry shortly."
_UPSTREAM_STYLES = ("retry-after", "ratelimit", "metadata")


@dataclass
class Options:
    """How the server answers; set at start and by ``POST /_reset``."""

    latency_ms: float = 0.0
    rate: float | None = None  # accepted requests per sliding 1-second window, told to clients
    hidden_rpm: float | None = None  # enforced as hidden_rpm/60 per second, 429 + Retry-After only
    upstream_429: float = 0.0  # share of requests answered with an upstream provider's 429
    upstream_retry_after: int = 1  # the Retry-After of those, in seconds

    def update(self, values: dict[str, Any]) -> None:
        """Set the options named in ``values`` (unknown names are an error)."""
        for key, value in values.items():
            if key not in asdict(self):
                raise ValueError(f"unknown option {key!r}")
            setattr(self, key, value)


def max_in_window(stamps: list[float], width: float = 1.0) -> int:
    """The most timestamps (sorted) that fall in any half-open window [t, t + width)."""
    best = start = 0
    for end, stamp in enumerate(stamps):
        while stamp - stamps[start] >= width:
            start += 1
        best = max(best, end - start + 1)
    return best


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class State:
    """Counters, arrival times and the rate limiter, shared by all connections."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.reset()

    def reset(self) -> None:
        """Forget all counters and arrivals; restart the CPU clock."""
        self.arrivals: list[float] = []
        self.ok_times: list[float] = []
        self.ok = self.rate_limited = self.upstream_limited = self.not_found = self.connections = 0
        self.rng = random.Random(0)  # the same upstream 429s on every run
        self.accepted: collections.deque[float] = collections.deque()
        self.cpu_start = _cpu_seconds()
        self.generated = 0

    def limit_per_second(self) -> tuple[float | None, bool]:
        """The enforced limit per sliding second, and whether clients are told about it."""
        if self.options.rate:
            return self.options.rate, True
        if self.options.hidden_rpm:
            return self.options.hidden_rpm / 60.0, False
        return None, False

    def admit(self, now: float) -> float | None:
        """Count one chat request; None to accept it, else the seconds until a slot frees."""
        self.arrivals.append(now)
        limit, _ = self.limit_per_second()
        if limit is None:
            self._accept(now)
            return None
        accepted = self.accepted
        while accepted and accepted[0] <= now - 1.0:
            accepted.popleft()
        if len(accepted) >= limit:
            self.rate_limited += 1
            return accepted[0] + 1.0 - now
        accepted.append(now)
        self._accept(now)
        return None

    def _accept(self, now: float) -> None:
        self.ok += 1
        self.ok_times.append(now)

    def upstream_style(self) -> str | None:
        """The header style of an upstream 429 for this request, or None to answer it normally."""
        share = self.options.upstream_429
        if not share or self.rng.random() >= share:
            return None
        self.upstream_limited += 1
        self.ok -= 1  # admitted by the rate limit, but not a success
        self.ok_times.pop()
        return _UPSTREAM_STYLES[(self.upstream_limited - 1) % len(_UPSTREAM_STYLES)]

    def ok_per_minute(self) -> list[int]:
        """Successes in each whole or partial minute from the first request."""
        if not self.arrivals or not self.ok_times:
            return []
        first = self.arrivals[0]
        counts = [0] * (int((self.ok_times[-1] - first) // 60) + 1)
        for stamp in self.ok_times:
            counts[int((stamp - first) // 60)] += 1
        return counts

    def stats(self) -> dict[str, Any]:
        """The counters as JSON-ready values (CPU is read first, before the window scan)."""
        cpu = _cpu_seconds() - self.cpu_start
        stamps = self.arrivals
        return {
            "requests": len(stamps),
            "ok": self.ok,
            "rate_limited": self.rate_limited,
            "upstream_limited": self.upstream_limited,
            "ok_per_minute": self.ok_per_minute(),
            "last_ok": self.ok_times[-1] if self.ok_times else None,
            "not_found": self.not_found,
            "connections": self.connections,
            "first": stamps[0] if stamps else None,
            "last": stamps[-1] if stamps else None,
            "max_per_1s": max_in_window(stamps),
            "cpu_s": cpu,
            "options": asdict(self.options),
        }


def _response(status: bytes, body: bytes, extra: bytes = b"", close: bool = False) -> bytes:
    head = b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
        status, len(body)
    )
    if close:
        head += b"Connection: close\r\n"
    return head + extra + b"\r\n" + body


class HttpProtocol(asyncio.Protocol):
    """One keep-alive connection: parse requests as bytes arrive, answer them in order."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.buffer = bytearray()
        self.slots: collections.deque[list[bytes | None]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while not self.closing and self._parse_one():
            pass

    def _parse_one(self) -> bool:
        """Handle one complete request from the buffer; False when more bytes are needed."""
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > _MAX_HEAD:
                self._fail(b"431 Request Header Fields Too Large")
            return False
        head = bytes(buffer[:end]).split(b"\r\n")
        length, close, chunked = _header_facts(head[1:])
        if chunked or length is None:
            self._fail(b"411 Length Required")
            return False
        total = end + 4 + length
        if len(buffer) < total:
            return False
        body = bytes(buffer[end + 4 : total])
        del buffer[:total]
        parts = head[0].split(b" ")
        if len(parts) != 3:
            self._fail(b"400 Bad Request")
            return False
        self._dispatch(parts[0], parts[1], body, close)
        return True

    def _fail(self, status: bytes) -> None:
        self.closing = True
        self._queue_now(_response(status, b"", close=True))

    def _dispatch(self, method: bytes, target: bytes, body: bytes, close: bool) -> None:
        path = target.split(b"?", 1)[0]
        if close:
            self.closing = True
        if method == b"POST" and path in _CHAT_PATHS:
            self._chat(close)
        elif path == b"/_stats":
            self._queue_now(_response(b"200 OK", orjson.dumps(self.state.stats()), close=close))
        elif method == b"POST" and path == b"/_reset":
            self._reset(body, close)
        else:
            self.state.not_found += 1
            self._queue_now(_response(b"404 Not Found", _NOT_FOUND, close=close))

    def _reset(self, body: bytes, close: bool) -> None:
        try:
            self.state.options.update(orjson.loads(body) if body.strip() else {})
        except (ValueError, TypeError) as exc:
            message = orjson.dumps({"error": {"code": 400, "message": str(exc)}})
            self._queue_now(_response(b"400 Bad Request", message, close=close))
            return
        self.state.reset()
        self._queue_now(_response(b"200 OK", orjson.dumps(asdict(self.state.options)), close=close))

    def _chat(self, close: bool) -> None:
        state = self.state
        wait = state.admit(time.monotonic())
        if wait is not None:
            self._queue_now(_rate_limited(wait, state.limit_per_second()[1], close))
            return
        style = state.upstream_style()
        if style is not None:
            reply = _upstream_limited(style, state.options.upstream_retry_after, close)
        else:
            state.generated += 1
            reply = _response(b"200 OK", _REPLY_HEAD % state.generated, close=close)
        delay = state.options.latency_ms / 1000.0
        if delay <= 0:
            self._queue_now(reply)
            return
        slot: list[bytes | None] = [None]
        self.slots.append(slot)
        asyncio.get_running_loop().call_later(delay, self._fill, slot, reply)

    def _queue_now(self, data: bytes) -> None:
        if not self.slots:
            self._send(data)
        else:
            self.slots.append([data])

    def _fill(self, slot: list[bytes | None], data: bytes) -> None:
        slot[0] = data
        while self.slots and self.slots[0][0] is not None:
            self._send(self.slots.popleft()[0])  # type: ignore[arg-type]

    def _send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(data)
        if self.closing and not self.slots:
            transport.close()


def _rate_limited(wait: float, told: bool, close: bool) -> bytes:
    """A 429: ``Retry-After`` in whole seconds; when the limit is told, also the reset time."""
    extra = b"Retry-After: %d\r\n" % max(1, math.ceil(wait))
    if told:
        reset_ms = int((time.time() + wait) * 1000)
        extra += b"X-RateLimit-Reset: %d\r\nX-RateLimit-Remaining: 0\r\n" % reset_ms
    return _response(b"429 Too Many Requests", _RATE_LIMITED, extra, close)


def _upstream_limited(style: str, retry_after: int, close: bool) -> bytes:
    """The 429 OpenRouter relays when an upstream provider is busy, in one of its header styles."""
    extra = b"Retry-After: %d\r\n" % retry_after
    limits = {"X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "0",
              "X-RateLimit-Reset": str(int((time.time() + retry_after) * 1000))}
    metadata: dict[str, Any] = {"raw": _UPSTREAM_MESSAGE, "provider_name": "Bench",
                                "limit_source": "upstream_provider_shared_pool",
                                "remedy_hint": "retry_after_delay"}
    if style == "ratelimit":
        extra += b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in limits.items())
    elif style == "metadata":
        metadata["headers"] = {"Retry-After": str(retry_after), **limits}
    body = orjson.dumps({"error": {"code": 429, "message": _UPSTREAM_MESSAGE, "metadata": metadata},
                         "user_id": "user_bench"})
    return _response(b"429 Too Many Requests", body, extra, close)


def _header_facts(lines: list[bytes]) -> tuple[int | None, bool, bool]:
    """Content-Length (0 when absent), whether the client asked to close, whether it is chunked."""
    length: int | None = 0
    close = chunked = False
    for line in lines:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                length = None
        elif name == b"connection":
            close = value.strip().lower() == b"close"
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    return length, close, chunked


async def serve(host: str, port: int, options: Options) -> None:
    """Serve forever; print ``PORT <n>`` on stdout once listening."""
    state = State(options)
    loop = asyncio.get_running_loop()
    # Thousands of clients' connections at once (P9): the open-file limit and the accept queue.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = await loop.create_server(lambda: HttpProtocol(state), host, port, backlog=8192)
    bound = server.sockets[0].getsockname()[1]
    print(f"PORT {bound}", flush=True)
    async with server:
        await server.serve_forever()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rate", type=float, default=None, help="requests per sliding second")
    parser.add_argument("--hidden-rpm", type=float, default=None, help="limit unknown to clients")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    args = _parse_args(argv)
    options = Options(latency_ms=args.latency_ms, rate=args.rate, hidden_rpm=args.hidden_rpm)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the project depends on uvloop on CPython
        print("bench server: uvloop missing, using asyncio's loop", file=sys.stderr)
        runner = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.host, args.port, options))


if __name__ == "__main__":
    main()
