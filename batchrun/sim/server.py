"""Running the simulator: the aiohttp app, an async context manager and a background-thread server."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType

from aiohttp import web

from .config import SimConfig
from .handlers import SimHandlers
from .ledger import Ledger

__all__ = [
    "HANDLERS_KEY",
    "SimHandle",
    "SimServer",
    "build_app",
    "new_event_loop",
    "serve",
    "server_ssl_context",
]

_PREFIXES = ("/api/v1", "/v1")
HANDLERS_KEY = web.AppKey("batchrun_sim_handlers", SimHandlers)


def build_app(config: SimConfig, ledger: Ledger | None = None) -> web.Application:
    """Build the aiohttp application: OpenRouter's routes under /api/v1 and /v1, or, for the
    openai and plain dialects, chat completions and models under /v1 only."""
    handlers = SimHandlers(config, ledger)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[HANDLERS_KEY] = handlers
    # OpenAI-style servers have no /api prefix and none of OpenRouter's key or generation routes.
    openrouter = config.dialect == "openrouter"
    for prefix in _PREFIXES if openrouter else ("/v1",):
        app.router.add_post(f"{prefix}/chat/completions", handlers.chat)
        app.router.add_get(f"{prefix}/models", handlers.models)
        if openrouter:
            app.router.add_get(f"{prefix}/key", handlers.key)
            app.router.add_get(f"{prefix}/auth/key", handlers.key)
            app.router.add_get(f"{prefix}/generation", handlers.generation)
    for prefix in ("", *_PREFIXES):
        app.router.add_get(f"{prefix}/_sim/ledger", handlers.sim_ledger)
        app.router.add_get(f"{prefix}/_sim/requests", handlers.sim_requests)
        app.router.add_post(f"{prefix}/_sim/reset", handlers.sim_reset)
    return app


@dataclass(frozen=True)
class SimHandle:
    """A running simulator as seen from the loop that started it."""

    host: str
    port: int
    ledger: Ledger
    config: SimConfig

    @property
    def root_url(self) -> str:
        """Return `http(s)://HOST:PORT` without the API prefix."""
        return f"{self.config.scheme}://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """Return the base URL clients are given: `.../api/v1` for OpenRouter, else `.../v1`."""
        prefix = "/api/v1" if self.config.dialect == "openrouter" else "/v1"
        return f"{self.root_url}{prefix}"


def server_ssl_context(config: SimConfig) -> ssl.SSLContext | None:
    """The server-side TLS context from the config's PEM files, or None to serve plain HTTP."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


@contextlib.asynccontextmanager
async def serve(config: SimConfig | None = None) -> AsyncIterator[SimHandle]:
    """Serve the simulator on the running loop for the duration of the `async with` block."""
    config = config or SimConfig()
    ledger = Ledger()
    app = build_app(config, ledger)
    # handler_cancellation: a client that gives up on a "hang" must not leave a sleeping task.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(
            runner, config.host, config.port, backlog=1024, ssl_context=server_ssl_context(config)
        )
        await site.start()
        port = int(runner.addresses[0][1])
        yield SimHandle(config.host, port, ledger, config)
    finally:
        await runner.cleanup()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """Return a new event loop, uvloop's when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class SimServer:
    """The simulator in a background thread with its own event loop (for sync tests and tools)."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self._handle: SimHandle | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> SimServer:
        """Start serving and return self once the port is bound."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="batchrun-sim", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError(f"simulator failed to start: {self._error}") from self._error
        return self

    def _run(self) -> None:
        loop = new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._error = exc
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self.config) as handle:
            self._handle = handle
            self._ready.set()
            await self._stop.wait()

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        self._thread = None

    @property
    def handle(self) -> SimHandle:
        """Return the running server's handle; raises if not started."""
        if self._handle is None:
            raise RuntimeError("SimServer is not started; call start() first")
        return self._handle

    @property
    def port(self) -> int:
        """Return the bound port."""
        return self.handle.port

    @property
    def root_url(self) -> str:
        """Return `http(s)://HOST:PORT`."""
        return self.handle.root_url

    @property
    def base_url(self) -> str:
        """Return `http(s)://HOST:PORT/api/v1` (`/v1` for the openai and plain dialects)."""
        return self.handle.base_url

    @property
    def ledger(self) -> Ledger:
        """Return the live ledger (thread-safe to read)."""
        return self.handle.ledger

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
