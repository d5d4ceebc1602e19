"""Running the simulator: the aiohttp app, an async context manager and a background-thread server."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType

import orjson
from aiohttp import web

from .batch_openrouter import OpenRouterBatches
from .batch_store import BatchStore
from .config import SimConfig
from .handlers import SimHandlers
from .ledger import Ledger

__all__ = [
    "BATCHES_KEY",
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
BATCHES_KEY = web.AppKey("batchrun_sim_batches", BatchStore)
_JSON = "application/json"


def build_app(config: SimConfig, ledger: Ledger | None = None) -> web.Application:
    """Build the aiohttp application: OpenRouter's routes under /api/v1 and /v1, or, for the
    openai and plain dialects, chat completions and models under /v1 only."""
    handlers = SimHandlers(config, ledger)
    store = BatchStore(config, handlers.ledger)
    # A batch create may carry up to batch_max_bytes (200 MB); anything above gets its own 413.
    max_body = max(64 * 1024 * 1024, config.batch_max_bytes + 1024 * 1024)
    app = web.Application(client_max_size=max_body)
    app[HANDLERS_KEY] = handlers
    app[BATCHES_KEY] = store
    # OpenAI-style servers have no /api prefix and none of OpenRouter's key or generation routes.
    openrouter = config.dialect == "openrouter"
    for prefix in _PREFIXES if openrouter else ("/v1",):
        app.router.add_post(f"{prefix}/chat/completions", handlers.chat)
        app.router.add_get(f"{prefix}/models", handlers.models)
        if openrouter:
            app.router.add_get(f"{prefix}/key", handlers.key)
            app.router.add_get(f"{prefix}/auth/key", handlers.key)
            app.router.add_get(f"{prefix}/generation", handlers.generation)
    if config.batch_api:
        _add_batch_routes(app, config, store, handlers)
    helpers = _SimHelpers(handlers, store)
    for prefix in ("", *_PREFIXES):
        app.router.add_get(f"{prefix}/_sim/ledger", helpers.ledger)
        app.router.add_get(f"{prefix}/_sim/requests", handlers.sim_requests)
        app.router.add_post(f"{prefix}/_sim/reset", helpers.reset)
        app.router.add_get(f"{prefix}/_sim/batches", helpers.batches)
        app.router.add_post(f"{prefix}/_sim/balance", helpers.balance)
    return app


def _add_batch_routes(
    app: web.Application, config: SimConfig, store: BatchStore, handlers: SimHandlers
) -> None:
    if config.dialect == "openrouter":
        batches = OpenRouterBatches(config, store, handlers.received)
        # /api/beta is the pre-GA alias the edge still mounts (batch-wire A1).
        for prefix in ("/api/v1", "/api/beta", "/v1"):
            app.router.add_post(f"{prefix}/batches", batches.create)
            app.router.add_get(f"{prefix}/batches", batches.list)
            app.router.add_get(f"{prefix}/batches/{{batch_id}}", batches.get)
            app.router.add_delete(f"{prefix}/batches/{{batch_id}}", batches.delete)
            app.router.add_get(f"{prefix}/batches/{{batch_id}}/results", batches.results)
            app.router.add_post(f"{prefix}/batches/{{batch_id}}/cancel", batches.cancel)
    elif config.dialect == "openai":
        from .batch_openai import OpenAIBatches

        oai = OpenAIBatches(config, store, handlers.received)
        app.router.add_post("/v1/files", oai.upload)
        app.router.add_get("/v1/files", oai.list_files)
        app.router.add_get("/v1/files/{file_id}", oai.get_file)
        app.router.add_get("/v1/files/{file_id}/content", oai.file_content)
        app.router.add_delete("/v1/files/{file_id}", oai.delete_file)
        app.router.add_post("/v1/batches", oai.create)
        app.router.add_get("/v1/batches", oai.list)
        app.router.add_get("/v1/batches/{batch_id}", oai.get)
        app.router.add_post("/v1/batches/{batch_id}/cancel", oai.cancel)


class _SimHelpers:
    """The /_sim test routes that also see batches: time moves on before the ledger is read."""

    def __init__(self, handlers: SimHandlers, store: BatchStore) -> None:
        self.handlers = handlers
        self.store = store

    async def ledger(self, request: web.Request) -> web.StreamResponse:
        """GET /_sim/ledger: settle batches due by now, then the ledger as JSON."""
        self.store.advance()
        return await self.handlers.sim_ledger(request)

    async def reset(self, request: web.Request) -> web.StreamResponse:
        """POST /_sim/reset: also forget every batch and file."""
        self.store.reset()
        return await self.handlers.sim_reset(request)

    async def batches(self, request: web.Request) -> web.Response:
        """GET /_sim/batches: every batch's state, deleted ones included (a test helper)."""
        self.store.advance()
        doc = {"batches": self.store.snapshot(), "credits_usd": self.store.credits_usd}
        return web.Response(body=orjson.dumps(doc), content_type=_JSON)

    async def balance(self, request: web.Request) -> web.Response:
        """POST /_sim/balance {"credits_usd": X or null}: set the credits batches are paid from."""
        try:
            doc = orjson.loads(await request.read())
            usd = doc["credits_usd"]
            if usd is not None and not isinstance(usd, (int, float)):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            body = orjson.dumps({"error": {"message": 'expected {"credits_usd": number or null}'}})
            return web.Response(status=400, body=body, content_type=_JSON)
        self.store.set_credits(None if usd is None else float(usd))
        answer = {
            "credits_usd": self.store.credits_usd,
            "billed_total_usd": self.store.ledger.billed_total_usd(),
        }
        return web.Response(body=orjson.dumps(answer), content_type=_JSON)


@dataclass(frozen=True)
class SimHandle:
    """A running simulator as seen from the loop that started it."""

    host: str
    port: int
    ledger: Ledger
    config: SimConfig
    batches: BatchStore | None = None

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
        yield SimHandle(config.host, port, ledger, config, app[BATCHES_KEY])
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

    @property
    def batches(self) -> BatchStore:
        """Return the batch store; `snapshot()` is thread-safe (GET /_sim/batches serves it)."""
        store = self.handle.batches
        assert store is not None
        return store

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
