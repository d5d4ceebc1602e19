"""Joining the Ray cluster a job names (``--ray auto|ADDRESS``), with errors a user can act on."""

from __future__ import annotations

import os
import secrets
from typing import Any

from batchrun.errors import ConfigError

__all__ = ["connect", "import_ray"]


def import_ray(address: str = "auto") -> Any:
    """Ray itself, or a one-line error saying how to install it.

    For a local cluster (``auto`` with no RAY_ADDRESS) the token is set first: Ray reads it when
    it is imported.
    """
    if _starts_local(address):
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        if os.environ["RAY_AUTH_MODE"] == "token":
            os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'batchrun[ray]'") from None
    return ray


def connect(address: str) -> bool:
    """Join the cluster at ``address``; ``auto``: RAY_ADDRESS, else a new local cluster.

    Returns True when this process started the cluster (it ends with the job).
    A local cluster gets a token of its own (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN): Ray 2.60
    otherwise turns token auth on and writes ``~/.ray/auth_token``.
    """
    ray = import_ray(address)
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"log_to_driver": False, "namespace": "batchrun", "configure_logging": False}
    started = _starts_local(address)
    if started:
        options.update(address="local", include_dashboard=False)
    else:
        options["address"] = os.environ["RAY_ADDRESS"] if address == "auto" else address
    try:
        ray.init(**options)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, its own AuthenticationError...
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ""
        if "auth" in text.lower() or "token" in text.lower():
            hint = " (a cluster with token auth needs RAY_AUTH_MODE=token and its RAY_AUTH_TOKEN here)"
        where = "a local Ray cluster" if started else f"the Ray cluster at {address}"
        raise ConfigError(f"cannot join {where}: {text}{hint}") from None
    return started


def _starts_local(address: str) -> bool:
    return address == "auto" and not os.environ.get("RAY_ADDRESS")
