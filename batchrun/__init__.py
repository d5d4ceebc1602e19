"""batchrun: run large prompt sets against OpenAI-compatible chat APIs, resumable and exactly once."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("batchrun")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
