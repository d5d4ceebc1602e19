"""A real local Ray cluster of two nodes for the tests that import ``ray_cluster``, started once.

Two ``ray start --block`` processes (a head and a second node, one CPU each, custom resources
``node_a``/``node_b``), each in its own process group, with token auth from the environment
(nothing written to $HOME), a temp dir of their own and every port moved off Ray's defaults, so
that another cluster on this machine is never joined nor disturbed. Teardown stops only these
processes (their groups, then any process that names this cluster's temp dir), never ``ray stop``.

These tests run only when named (``python -m pytest tests/ray_cluster``): the main suite skips
them, and without Ray installed every test here is skipped by ``pytest.importorskip``. The folder
is not named ``ray`` (a folder of that name on the path stands in for the real package, for mypy
and for imports), and has no conftest.py, which would shadow the suite's own ``conftest`` module.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_HERE = Path(__file__).parent
_START_TIMEOUT_S = 120.0


def require_ray(config: pytest.Config) -> None:
    """Skip unless Ray is installed and this folder was named (the cluster costs ~20 s to start)."""
    # A submodule: the bare name would import this folder itself as a namespace package.
    pytest.importorskip("ray.exceptions")
    named = any(Path(str(arg).split("::")[0]).resolve().is_relative_to(_HERE.resolve())
                for arg in config.args if not str(arg).startswith("-"))
    if not named:
        pytest.skip("Ray tests run on their own: python -m pytest tests/ray_cluster")


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class RayCluster:
    """The running test cluster: its address, the environment a driver needs, its processes."""

    address: str
    env: dict[str, str]
    temp_dir: Path
    starters: list[subprocess.Popen[bytes]]

    def processes(self) -> dict[int, str]:
        """pid -> command line of every process of this cluster (found by its temp dir)."""
        found = {}
        marker = str(self.temp_dir)
        starter_pids = {p.pid for p in self.starters}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline or int(entry) in starter_pids or self._descends(int(entry), starter_pids):
                found[int(entry)] = cmdline
        return found

    @staticmethod
    def _descends(pid: int, roots: set[int]) -> bool:
        for _ in range(8):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return False
            pid = int(stat.rsplit(")", 1)[1].split()[1])
            if pid in roots:
                return True
            if pid <= 1:
                return False
        return False

    def worker_pids(self, title: str) -> list[int]:
        """Worker processes whose title starts with ``title`` (Ray titles them ray::Class...)."""
        return [pid for pid, cmd in self.processes().items() if cmd.startswith(title)]


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--block", *args],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_port(port: int, starter: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if starter.poll() is not None:
            raise RuntimeError(f"ray start exited: {log.read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"ray start did not open port {port}: {log.read_text()[-2000:]}")


def _wait_for_nodes(cluster: RayCluster, count: int) -> None:
    probe = (
        "import ray, sys\n"
        "ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)\n"
        "print(sum(1 for n in ray.nodes() if n['Alive']))\n"
    )
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-c", probe, cluster.address], env=cluster.env,
                             capture_output=True, text=True, timeout=_START_TIMEOUT_S)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the cluster never had {count} nodes alive")


def _stop(cluster: RayCluster) -> None:
    for starter in cluster.starters:
        if starter.poll() is None:
            os.killpg(starter.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for starter in cluster.starters:
        try:
            starter.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(starter.pid, signal.SIGKILL)
            starter.wait()
    # Ray's agents can outlive their parent (PPID 1) and ignore SIGTERM: reap this cluster's own.
    for _ in range(50):
        left = [pid for pid in cluster.processes() if pid != os.getpid()]
        if not left:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


@pytest.fixture(scope="session", name="ray_cluster")
def ray_cluster_fixture(request: pytest.FixtureRequest) -> Iterator[RayCluster]:
    """Start the two-node cluster once for the session; stop only its processes at the end."""
    require_ray(request.config)
    temp_dir = Path(tempfile.mkdtemp(prefix="brray-", dir="/tmp"))  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "RAY_USAGE_STATS_ENABLED": "0",
    })
    gcs, head_nm, head_om, _, dash, agent_http, agent_grpc, rt_env, metrics, \
        b_nm, b_om, b_agent_http, b_agent_grpc, b_rt_env, b_metrics = _free_ports(15)
    common = ["--temp-dir", str(temp_dir), "--num-cpus", "1", "--disable-usage-stats"]
    head = _start([
        "--head", "--port", str(gcs), "--node-ip-address", "127.0.0.1", "--include-dashboard", "false",
        "--node-manager-port", str(head_nm), "--object-manager-port", str(head_om),
        "--dashboard-port", str(dash),  # (Ray Client, on 10001, needs ray[client]: not started)
        "--dashboard-agent-listen-port", str(agent_http), "--dashboard-agent-grpc-port", str(agent_grpc),
        "--runtime-env-agent-port", str(rt_env), "--metrics-export-port", str(metrics),
        "--resources", '{"node_a": 1}', *common,
    ], env, temp_dir / "head.log")
    cluster = RayCluster(f"127.0.0.1:{gcs}", env, temp_dir, [head])
    try:
        _wait_for_port(gcs, head, temp_dir / "head.log")
        second = _start([
            "--address", cluster.address, "--node-ip-address", "127.0.0.1",
            "--node-manager-port", str(b_nm), "--object-manager-port", str(b_om),
            "--dashboard-agent-listen-port", str(b_agent_http), "--dashboard-agent-grpc-port", str(b_agent_grpc),
            "--runtime-env-agent-port", str(b_rt_env), "--metrics-export-port", str(b_metrics),
            "--resources", '{"node_b": 1}', *common,
        ], env, temp_dir / "node_b.log")
        cluster.starters.append(second)
        _wait_for_nodes(cluster, 2)
        yield cluster
    finally:
        _stop(cluster)
        shutil.rmtree(temp_dir, ignore_errors=True)
