"""An OpenRouter-faithful chat-completions simulator on loopback, with faults, limits and a ledger."""

from __future__ import annotations

from .catalog import CATALOG, DEFAULT_MODEL, Model
from .config import FAULT_KINDS, SimConfig, parse_faults
from .ledger import Entry, Ledger
from .process import SimProcess
from .server import SimHandle, SimServer, build_app, serve

__all__ = [
    "CATALOG",
    "DEFAULT_MODEL",
    "FAULT_KINDS",
    "Entry",
    "Ledger",
    "Model",
    "SimConfig",
    "SimHandle",
    "SimProcess",
    "SimServer",
    "build_app",
    "parse_faults",
    "serve",
]
