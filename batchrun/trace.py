"""``--log FILE``: one JSON line per attempt, so a user can see why one id failed.

Holds what was decided and why (status, error kind, the wait chosen and whether the server asked
for it), never the API key or any request header.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from batchrun.engine.redact import Redactor
from batchrun.errors import ConfigError

__all__ = ["Trace"]


class Trace:
    """An append-only attempt log; lines are buffered and flushed by the writer's rhythm."""

    def __init__(self, path: Path, *, redactor: Redactor) -> None:
        self._redact = redactor.data
        try:
            self._file = open(path, "ab")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise ConfigError(f"cannot write the log {path}: {exc.strerror or exc}") from exc
        self._pending: list[bytes] = []

    def attempt(
        self,
        custom_id: str,
        attempt: int,
        *,
        status: int | None,
        kind: str | None,
        latency_s: float,
        usage: dict[str, Any] | None,
        message: str = "",
        wait_s: float | None = None,
        wait_reason: str | None = None,
        outcome: str,
    ) -> None:
        line = {
            "t": round(time.time(), 3),
            "custom_id": custom_id,
            "attempt": attempt,
            "status": status,
            "kind": kind,
            "outcome": outcome,  # done | retry | failed | left (a stop left it for the next run)
            "wait_s": None if wait_s is None else round(wait_s, 4),
            "wait_reason": wait_reason,
            "latency_s": round(latency_s, 4),
            "prompt_tokens": usage["prompt_tokens"] if usage else None,
            "completion_tokens": usage["completion_tokens"] if usage else None,
            "cost_usd": usage["cost_usd"] if usage else None,
            "message": message[:500] or None,
        }
        self._pending.append(self._redact(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)))

    def flush(self) -> None:
        if self._pending:
            self._file.write(b"".join(self._pending))
            self._pending.clear()
            self._file.flush()

    def close(self) -> None:
        self.flush()
        self._file.close()
