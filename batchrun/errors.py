"""The one error hierarchy of batchrun, and the error kinds written to output records.

    BatchrunError                 anything batchrun raises on purpose; ``exit_code`` says how the CLI ends
    ├── ConfigError               a bad flag, job file, input path or output folder (exit 2, nothing sent)
    │   └── ResumeMismatch        the output belongs to another input/model/parameters (exit 2)
    ├── OutputLocked              another run holds the output (exit 2)
    ├── IdNotFound                `show` was given an id the output has no record of (exit 1)
    └── JobStopped                the job stopped early for a job-level reason (exit 3, resumable)

Per-request failures are not exceptions: they are *kinds* (docs/design.md §4) carried in
``error.code`` of an error record. ``TransportFailure`` is the only exception raised per
request, and only inside ``transport.py``'s caller.
"""

from __future__ import annotations

__all__ = [
    "PER_LINE_VERDICTS",
    "RETRYABLE_KINDS",
    "BatchrunError",
    "ConfigError",
    "ErrorKind",
    "IdNotFound",
    "JobStopped",
    "OutputLocked",
    "ResumeMismatch",
    "TransportFailure",
]


class ErrorKind:
    """The values of ``error.code`` in error records."""

    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    PROVIDER_ERROR = "provider_error"
    INVALID_REQUEST = "invalid_request"
    MODEL_UNAVAILABLE = "model_unavailable"
    CONTENT_FILTERED = "content_filtered"
    AUTH_ERROR = "auth_error"
    INSUFFICIENT_CREDITS = "insufficient_credits"
    BUDGET_EXCEEDED = "budget_exceeded"
    INVALID_INPUT = "invalid_input"
    INVALID_OUTPUT = "invalid_output"
    INTERRUPTED = "interrupted"
    OUTPUT_ERROR = "output_error"  # the output files refused a write (disk full, read-only)


RETRYABLE_KINDS = frozenset(
    {
        ErrorKind.RATE_LIMITED,
        ErrorKind.SERVER_ERROR,
        ErrorKind.TIMEOUT,
        ErrorKind.CONNECTION_ERROR,
        ErrorKind.PROVIDER_ERROR,
        ErrorKind.INVALID_OUTPUT,
    }
)
# Verdicts about one line: a rerun keeps them unless asked with --retry-failed.
PER_LINE_VERDICTS = frozenset(
    {ErrorKind.INVALID_REQUEST, ErrorKind.CONTENT_FILTERED, ErrorKind.INVALID_OUTPUT}
)


class BatchrunError(Exception):
    """Base of every error batchrun raises on purpose; its message is meant for the user."""

    exit_code = 1


class ConfigError(BatchrunError):
    """A usage or configuration mistake found before any request is sent."""

    exit_code = 2


class ResumeMismatch(ConfigError):
    """The output was made by a different input, model or parameters."""


class OutputLocked(BatchrunError):
    """Another batchrun process is writing the same output."""

    exit_code = 2


class IdNotFound(BatchrunError):
    """``batchrun show``: the id has no record in the output (exit 1)."""

    exit_code = 1


class JobStopped(BatchrunError):
    """The job stopped early (auth, credits, model, budget, disk); a rerun resumes it."""

    exit_code = 3

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class TransportFailure(Exception):
    """A request that got no complete HTTP answer: timeout, reset, refused, torn body."""

    def __init__(
        self, kind: str, message: str, *, stops_job: bool = False, no_answer: bool = False
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.stops_job = stops_job  # every request would fail alike (an untrusted certificate)
        # The server was never reached (DNS, refused, unreachable): nothing was sent or billed.
        self.no_answer = no_answer
