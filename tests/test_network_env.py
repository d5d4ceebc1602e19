"""Proxy variables and a custom CA (SSL_CERT_FILE) are honoured: the CLI as a real process, the
simulator serving real TLS with a throwaway CA, and a real HTTP forward proxy written here."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
import pytest
from conftest import cli_env, job_file, prompts, read_jsonl, run_cli, write_jsonl

from batchrun.sim import SimConfig, SimProcess, SimServer
from batchrun.transport import Transport

T = TypeVar("T")
OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(
    OPENSSL is None, reason="needs the openssl command to make a throwaway CA and certificate"
)

# A name that never resolves (RFC 6761): a request for it succeeds only through the proxy, which
# maps it to loopback, so "nothing went around the proxy" needs no counting.
PROXY_ONLY_HOST = "batchrun-sim.invalid"
LINES = 12
# Settings of whoever runs the tests that would change what the CLI under test does.
_AMBIENT = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ssl_cert_file", "ssl_cert_dir",
            "request_method")


# -- a throwaway CA and a server certificate -------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path  # signed the server's certificate
    other_ca: Path  # signed nothing used here
    cert: Path
    key: Path


def _openssl(cwd: Path, *args: str | Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=60)


_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    pem, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl(folder, "req", "-x509", *_EC_KEY, "-keyout", key, "-out", pem, "-days", "2",
             "-subj", f"/CN=batchrun test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return pem, key


def _make_server_cert(folder: Path, ca_pem: Path, ca_key: Path) -> tuple[Path, Path]:
    cert, key, csr, ext = (folder / f"server.{suffix}" for suffix in ("pem", "key", "csr", "ext"))
    # Key usages and key identifiers too: Python 3.13 verifies with VERIFY_X509_STRICT.
    ext.write_text(
        f"subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:{PROXY_ONLY_HOST}\n"
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(folder, "req", *_EC_KEY, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    _openssl(folder, "x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key,
             "-set_serial", "2", "-days", "2", "-extfile", ext, "-out", cert)
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("tls")
    ca, ca_key = _make_ca(folder, "ca")
    other_ca, _ = _make_ca(folder, "other-ca")
    cert, key = _make_server_cert(folder, ca, ca_key)
    return Certs(ca, other_ca, cert, key)


@pytest.fixture
def tls_sim(sim_factory: Callable[..., SimServer], certs: Certs) -> SimServer:
    return sim_factory(tls_cert=str(certs.cert), tls_key=str(certs.key))


# -- a forward proxy ---------------------------------------------------------------------------

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "upgrade"}
)


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    request_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    method, target, version = request_line.split(" ")
    headers = [(name.strip(), value.strip()) for name, value in (line.split(":", 1) for line in lines)]
    return method, target, version, headers


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()


async def _relay(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Copy bytes both ways until either side closes."""
    pipes = {asyncio.ensure_future(_pipe(client[0], upstream[1])),
             asyncio.ensure_future(_pipe(upstream[0], client[1]))}
    try:
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)


class ForwardProxy:
    """An HTTP/1.1 forward proxy on loopback, in a thread of its own, recording what it relays.

    An absolute-form request (`POST http://host:port/path HTTP/1.1`) goes upstream in origin form
    with `Connection: close`, so each connection carries one request and every request is counted;
    `CONNECT host:port` opens a tunnel. Both then relay bytes until either side closes.
    """

    def __init__(self, hosts: Mapping[str, str] | None = None) -> None:
        self.hosts = dict(hosts or {})  # name -> the address the proxy connects to instead
        self.connections = 0
        self.forwarded: list[str] = []  # "METHOD URL" of each absolute-form request
        self.tunnels: list[str] = []  # "host:port" of each CONNECT
        self.proxy_auth: list[str | None] = []  # Proxy-Authorization of each request, or None
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> ForwardProxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def stop(self) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        upstream = None
        try:
            upstream = await self._open_upstream(reader, writer)
            if upstream is not None:
                await _relay((reader, writer), upstream)
        finally:
            writer.close()
            if upstream is not None:
                upstream[1].close()
            self._tasks.discard(task)

    async def _open_upstream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return None
        method, target, version, headers = _parse_head(head)
        self.proxy_auth.append(next((v for k, v in headers if k.lower() == "proxy-authorization"), None))
        url = urlsplit(target if method != "CONNECT" else f"//{target}")
        host = url.hostname or ""
        try:
            upstream = await asyncio.open_connection(self.hosts.get(host, host), url.port or 80)
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return None
        if method == "CONNECT":
            self.tunnels.append(target)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            return upstream
        self.forwarded.append(f"{method} {target}")
        path = url.path + (f"?{url.query}" if url.query else "")
        kept = [f"{k}: {v}" for k, v in headers if k.lower() not in _HOP_BY_HOP]
        lines = [f"{method} {path or '/'} {version}", *kept, "Connection: close", "", ""]
        upstream[1].write("\r\n".join(lines).encode("latin-1"))
        return upstream


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    server = ForwardProxy({PROXY_ONLY_HOST: "127.0.0.1"}).start()
    yield server
    server.stop()


# -- helpers -------------------------------------------------------------------------------------


def net_env(**extra: str) -> dict[str, str]:
    """The CLI's environment without the proxy and CA settings of whoever runs the tests."""
    env = {k: v for k, v in cli_env().items() if k.lower() not in _AMBIENT}
    return {**env, **extra}


def run_through_env(tmp_path: Path, base_url: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(LINES))
    job = job_file(tmp_path, source, extra=f'base_url = "{base_url}"')
    return run_cli("run", job, "--no-progress", env=env, timeout=60)


def assert_all_succeeded(tmp_path: Path, completed: subprocess.CompletedProcess[str]) -> None:
    assert completed.returncode == 0, completed.stderr
    results = read_jsonl(tmp_path / "out.jsonl")
    assert {r["custom_id"] for r in results} == {f"p{i}" for i in range(LINES)}
    assert all(r["attempts"] == 1 for r in results), "no request needed a retry"


def via_alias(sim: SimServer) -> str:
    """The simulator's base URL under a name only the proxy can resolve."""
    return f"{sim.config.scheme}://{PROXY_ONLY_HOST}:{sim.port}/api/v1"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- the simulator over TLS ----------------------------------------------------------------------


def test_tls_sim_serves_https_that_the_ca_verifies(tls_sim: SimServer, certs: Certs) -> None:
    assert tls_sim.base_url == f"https://127.0.0.1:{tls_sim.port}/api/v1"
    context = ssl.create_default_context(cafile=str(certs.ca))
    with urllib.request.urlopen(tls_sim.base_url + "/models", context=context, timeout=10) as resp:
        assert orjson.loads(resp.read())["data"]
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(tls_sim.base_url + "/models", context=ssl.create_default_context(),
                               timeout=10)


def test_sim_config_needs_cert_and_key_together(certs: Certs) -> None:
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        SimConfig(tls_cert=str(certs.cert))
    assert SimConfig().scheme == "http"


def test_sim_process_with_tls_flags_prints_https_and_its_ledger_ignores_proxies(
    certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy nobody listens on: the ledger helper must talk to its child directly.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with SimProcess(["--tls-cert", str(certs.cert), "--tls-key", str(certs.key)]) as proc:
        assert proc.base_url.startswith("https://127.0.0.1:")
        assert proc.ledger_json()["counts"]["requests"] == 0


def test_sim_command_refuses_a_key_that_does_not_load(certs: Certs) -> None:
    completed = run_cli("sim", "--port", "0", "--tls-cert", certs.cert, "--tls-key", certs.ca,
                        env=net_env(), timeout=30)
    assert completed.returncode == 2
    assert f"cannot load --tls-cert {certs.cert}" in completed.stderr
    assert "Traceback" not in completed.stderr


# -- SSL_CERT_FILE -------------------------------------------------------------------------------


def test_https_job_succeeds_when_ssl_cert_file_names_the_ca(
    tmp_path: Path, tls_sim: SimServer, certs: Certs
) -> None:
    completed = run_through_env(tmp_path, tls_sim.base_url, net_env(SSL_CERT_FILE=str(certs.ca)))

    assert_all_succeeded(tmp_path, completed)
    assert tls_sim.ledger.counts()["requests"] == LINES


@pytest.mark.parametrize("trust", ["system store", "another CA"])
def test_an_untrusted_certificate_stops_the_job_with_how_to_fix_it(
    tmp_path: Path, tls_sim: SimServer, certs: Certs, trust: str
) -> None:
    env = net_env() if trust == "system store" else net_env(SSL_CERT_FILE=str(certs.other_ca))

    completed = run_through_env(tmp_path, tls_sim.base_url, env)

    # Every request would fail the same way, so the job stops (resumable) instead of retrying each.
    assert completed.returncode == 3, completed.stderr
    assert "Traceback" not in completed.stderr
    assert "not trusted" in completed.stderr and "SSL_CERT_FILE" in completed.stderr
    assert read_jsonl(tmp_path / "out.jsonl") == []
    assert read_jsonl(tmp_path / "out.errors.jsonl") == [], "the lines are left for the rerun"
    assert tls_sim.ledger.counts()["requests"] == 0, "no request got past the handshake"

    rerun = run_through_env(tmp_path, tls_sim.base_url, net_env(SSL_CERT_FILE=str(certs.ca)))
    assert_all_succeeded(tmp_path, rerun)




@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        pytest.param("SSL_CERT_FILE", "/nonexistent/ca.pem", "SSL_CERT_FILE"),
        # a file, but no certificate in it
        pytest.param("SSL_CERT_FILE", "{job}", "SSL_CERT_FILE"),
        pytest.param("ALL_PROXY", "socks5://127.0.0.1:9", "socks5"),
    ],
)
def test_unusable_network_settings_are_exit_2_with_one_line(
    tmp_path: Path, sim: SimServer, name: str, value: str, needle: str
) -> None:
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", prompts(2)),
                   extra=f'base_url = "{sim.base_url}"')

    completed = run_cli("run", job, "--no-progress", env=net_env(**{name: value.format(job=job)}))

    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("batchrun: error:") and needle in last
    assert sim.ledger.counts()["requests"] == 0


def test_transport_gets_models_and_key_with_the_ca_through_the_proxy(
    tls_sim: SimServer, certs: Certs, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca))
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)

    async def fetch() -> tuple[Any, Any]:
        async with Transport(via_alias(tls_sim), "sk-or-test", connections=2, timeout_s=10) as t:
            return await t.get_json("/models"), await t.get_json("/key")

    models, key = asyncio.run(fetch())

    assert models is not None and models["data"]
    assert key is not None and "data" in key
    assert proxy.tunnels and set(proxy.tunnels) == {f"{PROXY_ONLY_HOST}:{tls_sim.port}"}


# -- proxies -------------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_every_http_request_goes_through_the_proxy(
    tmp_path: Path, sim: SimServer, proxy: ForwardProxy, variable: str
) -> None:
    completed = run_through_env(tmp_path, sim.base_url, net_env(**{variable: proxy.url}))

    assert_all_succeeded(tmp_path, completed)
    assert sim.ledger.counts()["requests"] == LINES
    # OpenRouter's prices and key check (an /api/v1 base URL speaks OpenRouter) go through it too.
    assert proxy.forwarded == [f"GET {sim.base_url}/models", f"GET {sim.base_url}/key"] + [
        f"POST {sim.base_url}/chat/completions"
    ] * LINES
    assert proxy.tunnels == []


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "example.com,127.0.0.1", "*"])
def test_no_proxy_exempts_the_host(
    tmp_path: Path, sim: SimServer, proxy: ForwardProxy, no_proxy: str
) -> None:
    env = net_env(HTTP_PROXY=proxy.url, HTTPS_PROXY=proxy.url, NO_PROXY=no_proxy)

    completed = run_through_env(tmp_path, sim.base_url, env)

    assert_all_succeeded(tmp_path, completed)
    assert proxy.connections == 0


def test_https_goes_through_a_connect_tunnel_with_the_ca(
    tmp_path: Path, tls_sim: SimServer, certs: Certs, proxy: ForwardProxy
) -> None:
    with pytest.raises(OSError):  # the premise: without the proxy this name leads nowhere
        socket.getaddrinfo(PROXY_ONLY_HOST, tls_sim.port)
    env = net_env(HTTPS_PROXY=proxy.url, SSL_CERT_FILE=str(certs.ca))

    completed = run_through_env(tmp_path, via_alias(tls_sim), env)

    assert_all_succeeded(tmp_path, completed)
    assert tls_sim.ledger.counts()["requests"] == LINES
    assert proxy.tunnels and set(proxy.tunnels) == {f"{PROXY_ONLY_HOST}:{tls_sim.port}"}
    assert proxy.forwarded == [], "https is never sent to the proxy in the clear"


def test_http_proxy_alone_does_not_proxy_https(
    tmp_path: Path, tls_sim: SimServer, certs: Certs, proxy: ForwardProxy
) -> None:
    env = net_env(HTTP_PROXY=proxy.url, SSL_CERT_FILE=str(certs.ca))

    assert_all_succeeded(tmp_path, run_through_env(tmp_path, tls_sim.base_url, env))
    assert proxy.connections == 0


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_credentials_in_the_proxy_url_reach_the_proxy(
    tmp_path: Path, sim: SimServer, tls_sim: SimServer, certs: Certs, proxy: ForwardProxy,
    scheme: str,
) -> None:
    target = sim if scheme == "http" else tls_sim
    with_auth = proxy.url.replace("http://", "http://batchrun:s3cret@")
    env = net_env(HTTP_PROXY=with_auth, HTTPS_PROXY=with_auth, SSL_CERT_FILE=str(certs.ca))

    completed = run_through_env(tmp_path, via_alias(target), env)

    assert_all_succeeded(tmp_path, completed)
    assert proxy.proxy_auth and set(proxy.proxy_auth) == {_basic("batchrun", "s3cret")}
    assert "s3cret" not in completed.stderr


def test_a_proxy_given_as_host_and_port_is_an_http_proxy(
    tmp_path: Path, sim: SimServer, proxy: ForwardProxy
) -> None:
    # curl and requests read HTTP_PROXY=host:port as http://host:port.
    env = net_env(HTTP_PROXY=proxy.url.removeprefix("http://"))

    assert_all_succeeded(tmp_path, run_through_env(tmp_path, sim.base_url, env))
    assert len(proxy.forwarded) == LINES + 2  # and GET /models, GET /key


def test_the_built_in_simulator_is_never_reached_through_a_proxy(
    tmp_path: Path, proxy: ForwardProxy
) -> None:
    # A corporate proxy cannot reach the loopback simulator that --sim starts on this machine.
    assert_all_succeeded(tmp_path, run_through_env(tmp_path, "sim", net_env(HTTP_PROXY=proxy.url)))
    assert proxy.connections == 0
