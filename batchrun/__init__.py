"""batchrun: run large prompt sets against OpenAI-compatible chat APIs, resumable and exactly once."""

from __future__ import annotations

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("batchrun")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

# After __version__: these modules read it from here.
from batchrun.api import run, run_async
from batchrun.config import JobConfig, load_config
from batchrun.errors import (
    BatchrunError,
    ConfigError,
    ErrorKind,
    JobStopped,
    OutputLocked,
    ResumeMismatch,
)
from batchrun.events import BatchProgress, Event, EventHandler, Finished, Notice, Planned, Retrying
from batchrun.export import ExportResult, export
from batchrun.runner import RunResult
from batchrun.summary import Summary

__all__ = [
    "BatchProgress",
    "BatchrunError",
    "ConfigError",
    "ErrorKind",
    "Event",
    "EventHandler",
    "ExportResult",
    "Finished",
    "JobConfig",
    "JobStopped",
    "Notice",
    "OutputLocked",
    "Planned",
    "ResumeMismatch",
    "Retrying",
    "RunResult",
    "Summary",
    "__version__",
    "export",
    "load_config",
    "run",
    "run_async",
]
