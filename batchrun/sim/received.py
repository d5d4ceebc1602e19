"""What the simulator was sent: a bounded log of requests, so tests can check what arrived."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["Received", "ReceivedLog"]

_DEFAULT_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived; `body` is the parsed JSON (None when there was none or it was bad)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    auth_scheme: str | None  # "Bearer" when an Authorization header came; the key is never kept
    body: Any
    t: float

    def header(self, name: str) -> str | None:
        """Return a header's value by case-insensitive name, or None."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


def _headers(request: web.Request) -> tuple[dict[str, str], str | None]:
    headers: dict[str, str] = {}
    names: dict[str, str] = {}  # lower-case name -> the spelling that came first
    scheme = None
    for raw_name, value in request.headers.items():
        name = str(raw_name)  # aiohttp's istr, which orjson refuses as a key
        if name.lower() == "authorization":
            scheme = value.split(" ", 1)[0] if value else ""
            continue
        # A repeated header, whatever its case, folds into one comma-separated value as HTTP
        # allows: a client that sends a name twice shows up as "first, second".
        key = names.setdefault(name.lower(), name)
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers, scheme


def _body(raw: bytes | None) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


class ReceivedLog:
    """A thread-safe ring of the last `size` requests: written by the server, read by tests."""

    def __init__(self, size: int = _DEFAULT_SIZE) -> None:
        self._lock = threading.Lock()
        self._items: deque[Received] = deque(maxlen=size)

    def add(self, request: web.Request, raw: bytes | None = None) -> None:
        """Log one request; `raw` is its body, parsed here so a bad one is still logged."""
        headers, scheme = _headers(request)
        item = Received(
            request.method,
            request.path,
            dict(request.query),
            headers,
            scheme,
            _body(raw),
            time.monotonic(),
        )
        with self._lock:
            self._items.append(item)

    def entries(self, path_suffix: str = "") -> list[Received]:
        """Return the logged requests, oldest first; only those whose path ends so, when given."""
        with self._lock:
            items = list(self._items)
        return [r for r in items if r.path.endswith(path_suffix)]

    def chats(self) -> list[Received]:
        """Return the logged chat-completions requests, oldest first."""
        return self.entries("/chat/completions")

    def clear(self) -> None:
        """Forget everything (POST /_sim/reset)."""
        with self._lock:
            self._items.clear()

    def to_json(self) -> bytes:
        """Serialise every logged request as JSON bytes (GET /_sim/requests)."""
        return orjson.dumps({"requests": [asdict(r) for r in self.entries()]})
