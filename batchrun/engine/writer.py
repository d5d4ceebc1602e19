"""Where a record gets written: the writer between finished requests and the output files.

Finished records wait in memory only until the next send or the next turn of the writer task,
whichever comes first: ``flush`` hands them to the kernel in one write per file (``os.write`` on
``O_APPEND``, in ``ledger.Ledger``), and the pipeline calls it before every send, so what a kill
can lose (sent but unwritten) never exceeds the requests in flight. ``fsync`` runs at most once per
``fsync_interval_s``, in a worker thread. Every line passes through the redactor first. A write the
disk refuses is reported (``failure``), never raised into the pipeline: only the pipeline decides
to stop the job.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson

from batchrun.engine.redact import Redactor
from batchrun.errors import JobStopped
from batchrun.ledger import Ledger
from batchrun.summary import Summary

__all__ = ["Writer", "dumps_record"]

_DUMPS_OPTIONS = orjson.OPT_APPEND_NEWLINE


def dumps_record(record: dict[str, Any], raw_body: bytes | None = None) -> bytes:
    """One record as a JSON line; integers beyond 64 bits are written exactly."""
    try:
        return orjson.dumps(record, option=_DUMPS_OPTIONS, default=str)
    except TypeError:
        # orjson refuses them (in metadata): the standard library writes them exactly, with the
        # embedded provider body parsed back from its bytes.
        response = record.get("response")
        if isinstance(response, dict) and isinstance(response.get("body"), orjson.Fragment):
            body = json.loads(raw_body) if raw_body else None
            record = {**record, "response": {**response, "body": body}}
        return (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode()


class Writer:
    """Pending records of one run, written to its ledger whole, redacted, and counted."""

    def __init__(self, ledger: Ledger, redactor: Redactor, summary: Summary) -> None:
        self._ledger = ledger
        self._redact = redactor.data
        self._summary = summary
        self._results: list[bytes] = []
        self._errors: list[bytes] = []
        self._wake = asyncio.Event()
        self._closing = False
        self.failure: JobStopped | None = None  # the disk refused a write: nothing more is written
        self.on_failure: Any = None  # called once with the failure (the pipeline stops the job)

    def result(self, record: dict[str, Any], raw_body: bytes | None = None) -> None:
        self._summary.add(record)
        self._results.append(self._redact(dumps_record(record, raw_body)))
        self._wake.set()

    def error(self, record: dict[str, Any]) -> None:
        self._summary.add(record)
        self._errors.append(self._redact(dumps_record(record)))
        self._wake.set()

    @property
    def pending(self) -> bool:
        return bool(self._results or self._errors)

    def flush(self) -> None:
        """Hand every finished record to the kernel now (a plain write; fsync comes later)."""
        if not (self._results or self._errors) or self.failure is not None:
            return
        results, errors = self._results, self._errors
        self._results, self._errors = [], []
        try:
            self._ledger.write(b"".join(results), b"".join(errors))
        except JobStopped as exc:
            self.failure = exc
            if self.on_failure is not None:
                self.on_failure(exc)

    async def serve(self, before_sync: Any = None) -> None:
        """The writer task: flush whatever finished, fsync when due, until ``close`` and empty."""
        ledger = self._ledger
        while True:
            await self._wake.wait()
            self._wake.clear()
            self.flush()
            if ledger.sync_due() and self.failure is None:
                if before_sync is not None:
                    before_sync()
                await asyncio.to_thread(ledger.sync)
            if self._closing and (self.failure is not None or not self.pending):
                return

    def close(self) -> None:
        """Let ``serve`` return once everything pending is written."""
        self._closing = True
        self._wake.set()
