"""All of batchrun's network code: one aiohttp session, errors translated in one place.

Why aiohttp: measured on a 2-core machine with the client on one core and a zero-latency loopback
server, a raw aiohttp loop costs 0.26–0.38 ms of CPU per request; httpx's AsyncClient managed
~300 req/s at 256 connections (its pool does work per connection on every request) and the
openai SDK ~0.07× aiohttp. Bodies go out as bytes that orjson made once and come back as bytes,
so nothing is serialized twice. Mind aiohttp's defaults, each overridden here: a connector limit
of 100 (we size it to the pool), proxies ignored unless ``trust_env=True``, and a 300 s total
timeout (ours is per attempt). We honour HTTP(S)_PROXY, NO_PROXY and SSL_CERT_FILE by resolving
them once at start rather than with ``trust_env=True``: aiohttp 3.14 then looks the proxy and
~/.netrc up in a worker thread on every request, which measured 2,494 against 8,111 req/s on one
core (the threads fight the event loop for the GIL).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import aiohttp
import orjson

from batchrun import __version__
from batchrun.config import DEFAULT_STREAM_IDLE_S
from batchrun.errors import ConfigError, ErrorKind, TransportFailure
from batchrun.fdlimit import is_too_many_files, too_many_files_hint
from batchrun.sse import StreamAssembler

__all__ = ["Reply", "Transport", "chat_url", "translate_errors"]

_APP_URL = "https://github.com/batchrun/batchrun"


class Reply(NamedTuple):
    """One chat answer as received: ``ttft_s`` is set for streamed replies that brought a token."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    ttft_s: float | None = None


def chat_url(base_url: str) -> str:
    """The chat-completions URL for a base URL given with or without ``/v1``."""
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    last = urlsplit(base).path.rsplit("/", 1)[-1]
    if last[:1] == "v" and last[1:].isdigit():
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


def api_root(base_url: str) -> str:
    """The base URL up to and including its version segment (where /models and /key live)."""
    return chat_url(base_url)[: -len("/chat/completions")]


class translate_errors:
    """Turn aiohttp's and the OS's exceptions into a TransportFailure of one error kind.

    A class, not ``@contextmanager``: it wraps every request, and a generator-based context
    manager costs a few microseconds more each time. The failure is raised ``from`` the original
    exception, so a developer's traceback keeps the aiohttp cause; the user sees one line.
    """

    __slots__ = ("timeout_s",)

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None and (failure := _failure(exc, self.timeout_s)) is not None:
            raise failure from exc


def _timeout(exc: BaseException, timeout_s: float) -> TransportFailure:
    return TransportFailure(ErrorKind.TIMEOUT, f"no complete answer within {timeout_s:g} s")


def _cut_off(exc: BaseException, timeout_s: float) -> TransportFailure:
    return TransportFailure(ErrorKind.CONNECTION_ERROR, f"the response was cut off: {exc}")


def _disconnected(exc: BaseException, timeout_s: float) -> TransportFailure:
    return TransportFailure(
        ErrorKind.CONNECTION_ERROR, "the server closed the connection without answering"
    )


def _untrusted(exc: BaseException, timeout_s: float) -> TransportFailure:
    assert isinstance(exc, aiohttp.ClientConnectorCertificateError)
    reason = getattr(exc.certificate_error, "verify_message", None) or exc.certificate_error
    # Every request would fail the same way: the job stops rather than retry each line.
    return TransportFailure(
        ErrorKind.CONNECTION_ERROR,
        f"the TLS certificate of {exc.host} is not trusted ({reason}): if a private CA or a "
        "TLS-inspecting proxy signs it, set SSL_CERT_FILE to a PEM file holding that CA",
        stops_job=True,
    )


def _no_proxy(exc: BaseException, timeout_s: float) -> TransportFailure:
    assert isinstance(exc, aiohttp.ClientProxyConnectionError)
    return TransportFailure(
        ErrorKind.CONNECTION_ERROR,
        f"cannot connect to the proxy {exc.host}:{exc.port} (from HTTP(S)_PROXY or ALL_PROXY): "
        f"{exc.os_error.strerror or exc.os_error}; fix it, or exempt the host with NO_PROXY",
        no_answer=True,
    )


def _no_connection(exc: BaseException, timeout_s: float) -> TransportFailure:
    assert isinstance(exc, aiohttp.ClientConnectorError)
    if is_too_many_files(exc.os_error):
        return _out_of_files(exc.os_error, timeout_s)
    return TransportFailure(ErrorKind.CONNECTION_ERROR, f"cannot connect: {exc}", no_answer=True)


def _out_of_files(exc: BaseException, timeout_s: float) -> TransportFailure:
    assert isinstance(exc, OSError)
    # Every new connection would fail alike: stop cleanly (exit 3) rather than fail each line.
    return TransportFailure(
        ErrorKind.CONNECTION_ERROR, f"cannot open a connection: {too_many_files_hint(exc)}",
        stops_job=True,
    )


def _other(exc: BaseException, timeout_s: float) -> TransportFailure:
    if isinstance(exc, OSError) and is_too_many_files(exc):
        return _out_of_files(exc, timeout_s)
    return TransportFailure(ErrorKind.CONNECTION_ERROR, f"{type(exc).__name__}: {exc}")


# The one mapping of low-level exceptions to batchrun's failures (after httpx's
# HTTPCORE_EXC_MAP), most specific first: the first entry the exception is an instance of wins.
EXCEPTION_MAP: tuple[tuple[type[BaseException], Callable[[BaseException, float], TransportFailure]], ...] = (
    (asyncio.TimeoutError, _timeout),
    (aiohttp.ClientPayloadError, _cut_off),
    (aiohttp.ServerDisconnectedError, _disconnected),
    (aiohttp.ClientConnectorCertificateError, _untrusted),
    (aiohttp.ClientProxyConnectionError, _no_proxy),
    (aiohttp.ClientConnectorError, _no_connection),
    (aiohttp.ClientError, _other),
    (OSError, _other),
)


def _failure(exc: BaseException, timeout_s: float) -> TransportFailure | None:
    """The TransportFailure an exception from a request stands for; None for other exceptions."""
    for kind, build in EXCEPTION_MAP:
        if isinstance(exc, kind):
            return build(exc, timeout_s)
    return None


def proxy_for(url: str) -> str | None:
    """The proxy for ``url`` from HTTP(S)_PROXY / ALL_PROXY, unless NO_PROXY exempts its host."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    if "://" not in proxy:  # curl and requests read `host:port` as an HTTP proxy
        proxy = "http://" + proxy
    given = urlsplit(proxy)
    if given.scheme not in ("http", "https"):
        # aiohttp would speak HTTP to it (a SOCKS proxy, say) and every request would fail.
        raise ConfigError(
            f"the proxy for {parts.hostname} is {given.scheme}://{given.hostname}:{given.port}, "
            "but batchrun supports only http:// and https:// proxies: change HTTP(S)_PROXY / "
            f"ALL_PROXY, or add {parts.hostname} to NO_PROXY"
        )
    return proxy


def _ssl_context() -> ssl.SSLContext | bool:
    cafile = os.environ.get("SSL_CERT_FILE")
    if not cafile:
        return True
    try:
        return ssl.create_default_context(cafile=cafile)
    except OSError as exc:  # ssl.SSLError included: a file with no PEM certificate in it
        raise ConfigError(
            f"SSL_CERT_FILE={cafile} cannot be used as CA certificates ({exc.strerror or exc}): "
            "point it at a PEM file of CA certificates, or unset it"
        ) from exc


async def _read_stream(
    response: aiohttp.ClientResponse, idle_s: float, started: float
) -> tuple[bytes, float | None]:
    """Assemble an SSE reply (``stream: true``) into one chat.completion body, as JSON bytes.

    Returns the body and the time to first token, counted from ``started`` (monotonic). A
    mid-stream error becomes the body's ``error`` (with the usage so far, so it is billed right)
    and is then classified like an HTTP 200 with an error; a stream cut off, or silent for
    ``idle_s``, is a connection error or a timeout.
    """
    assembler = StreamAssembler(started=started)
    try:
        while chunk := await asyncio.wait_for(response.content.readany(), idle_s):
            assembler.feed(chunk)
    except aiohttp.ClientPayloadError:
        pass  # the assembler reports the cut-off below
    except asyncio.TimeoutError as exc:
        raise TransportFailure(ErrorKind.TIMEOUT, f"the stream sent nothing for {idle_s:g} s") from exc
    body, error = assembler.result()
    if error is not None:
        if error["kind"] in (ErrorKind.CONNECTION_ERROR, ErrorKind.TIMEOUT):
            raise TransportFailure(error["kind"], error["message"])
        code = 429 if error["kind"] == ErrorKind.RATE_LIMITED else (error.get("status") or 502)
        body = {**body, "error": {"code": code, "message": error["message"]}}
    return orjson.dumps(body), assembler.ttft_s


def _with_defaults(headers: Mapping[str, str]) -> dict[str, str]:
    """The job's headers over batchrun's: names match in any case, and a job's
    ``X-OpenRouter-Title`` replaces the default ``X-Title`` too, so one title is sent."""
    given = {name.lower() for name in headers}
    if "x-openrouter-title" in given:
        given.add("x-title")
    defaults = {
        "Content-Type": "application/json",
        "User-Agent": f"batchrun/{__version__}",
        "HTTP-Referer": _APP_URL,
        "X-Title": "batchrun",
    }
    return {**{k: v for k, v in defaults.items() if k.lower() not in given}, **headers}


class Transport:
    """One connection pool to one server; use as ``async with Transport(...) as transport``."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        connections: int,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        stream_idle_s: float = DEFAULT_STREAM_IDLE_S,
        env_proxy: bool = True,
    ) -> None:
        self.url = chat_url(base_url)
        self.root = api_root(base_url)
        self.host = urlsplit(self.url).netloc
        self._timeout_s = timeout_s
        self._stream_idle_s = stream_idle_s
        self._env_proxy = env_proxy
        self._connections = connections
        self._headers = _with_defaults(headers or {})
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None
        self._proxy: str | None = None

    async def __aenter__(self) -> Transport:
        # Both read the environment and may raise ConfigError: before anything needs closing.
        ssl_context = _ssl_context()
        self._proxy = proxy_for(self.url) if self._env_proxy else None
        connector = aiohttp.TCPConnector(
            limit=self._connections, limit_per_host=0, ttl_dns_cache=300, ssl=ssl_context
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            trust_env=False,
            raise_for_status=False,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, body: bytes) -> Reply:
        """Send one chat request and read the whole answer, or raise TransportFailure."""
        assert self._session is not None, "use Transport as an async context manager"
        started = time.monotonic()
        with translate_errors(self._timeout_s):
            async with self._session.post(self.url, data=body, proxy=self._proxy) as response:
                if response.status == 200 and response.content_type == "text/event-stream":
                    raw, ttft_s = await _read_stream(response, self._stream_idle_s, started)
                    return Reply(response.status, response.headers, raw, ttft_s)
                return Reply(response.status, response.headers, await response.read())

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        content_type: str | None = None,
        params: Mapping[str, str | int] | None = None,
        timeout_s: float | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Send ``method root + path`` and read the whole answer, or raise TransportFailure.

        ``json_body`` is serialized with orjson; ``data`` goes out as given (bytes whose key
        order matters, a multipart body) with ``content_type`` when it is not JSON. Used by the
        Batch API clients; the chat path keeps ``post``.
        """
        assert self._session is not None, "use Transport as an async context manager"
        if json_body is not None:
            data = orjson.dumps(json_body)
        headers = {"Content-Type": content_type} if content_type else None
        timeout = self._timeout_s if timeout_s is None else timeout_s
        with translate_errors(timeout):
            async with self._session.request(
                method, self.root + path, data=data, params=params, headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout), proxy=self._proxy,
            ) as response:
                return response.status, response.headers, await response.read()

    async def get_json(self, path: str) -> Any:
        """GET ``root + path`` and parse it; None when it is not there or not JSON."""
        status, payload = await self.get(path)
        return payload if status == 200 else None

    async def get(self, path: str) -> tuple[int | None, Any]:
        """GET ``root + path``: the status (None without an answer) and the JSON body, or None."""
        assert self._session is not None, "use Transport as an async context manager"
        status: int | None = None
        with contextlib.suppress(TransportFailure, orjson.JSONDecodeError), translate_errors(30.0):
            async with self._session.get(
                self.root + path, timeout=aiohttp.ClientTimeout(total=30), proxy=self._proxy
            ) as response:
                status = response.status
                return status, orjson.loads(await response.read())
        return status, None
