"""The batch journal beside the output: what was submitted, under which batch and wire ids.

The results file stays the checkpoint of what is done; the journal says what may still complete.
One JSON line per event, appended and fsynced before the step it announces goes on (a kill loses
at most a torn last line, cut off on the next open). Per submission, keyed by its nonce:

    submit      written before the POST: nonce, api, model, endpoint, count, t0, worst_usd, and
                items [[input id, line, attempts, metadata], ...] (item i goes as "<nonce>-<i>")
    uploaded    OpenAI only: the input file's id, before POST /batches
    submitted   the batch id, once the reply is read (or once recovery found the batch: adopted)
    rejected    the POST was refused for sure (a 4xx): no batch exists, the lines are free
    abandoned   recovery waited out the visibility lag and found no batch: the lines are free
    disowned    an adopted batch's results do not carry the nonce: it was not ours
    status      the batch's status changed (status, counts)
    collected   every row's record is written and synced (status, counts, cost_usd)
    purged      the batch was deleted at the provider (--purge)
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchrun.config import output_paths
from batchrun.errors import JobStopped
from batchrun.ledger import read_records, repair_tail

__all__ = ["Journal", "Submission", "journal_path", "open_submissions", "read_journal"]

# Where a submission stands; only "intent" and "submitted" may still complete at the provider.
INTENT, SUBMITTED, REJECTED, ABANDONED, COLLECTED = (
    "intent", "submitted", "rejected", "abandoned", "collected",
)


def journal_path(output: Path) -> Path:
    """``<stem>.batches.jsonl`` beside the results file."""
    manifest = output_paths(output)["manifest"]
    return manifest.with_name(manifest.name[: -len(".manifest.json")] + ".batches.jsonl")


@dataclass
class Submission:
    """One submission as the journal tells it."""

    nonce: str
    api: str
    model: str
    endpoint: str
    count: int
    t0: float
    worst_usd: float
    # [input id, line, attempts, metadata, billed so far]; index = wire index. Emptied once the
    # submission can no longer complete, so a long job's memory does not grow with its history.
    items: list[list[Any]]
    state: str = INTENT
    batch_id: str | None = None
    file_id: str | None = None
    adopted: bool = False
    status: str | None = None  # the provider's batch status, as last seen
    counts: dict[str, Any] = field(default_factory=dict)
    cost_usd: float | None = None
    purged: bool = False
    disowned: list[str] = field(default_factory=list)  # batch ids proven not to be this one
    updated: float = 0.0
    message: str = ""

    @property
    def may_complete(self) -> bool:
        """True while a batch holding these lines may still complete (or be collected)."""
        return self.state in (INTENT, SUBMITTED)

    def input_ids(self) -> Iterator[str]:
        return (str(item[0]) for item in self.items)


def _apply(subs: dict[str, Submission], entry: dict[str, Any]) -> None:
    op = entry.get("op")
    nonce = entry.get("nonce")
    if not isinstance(nonce, str):
        return
    if op == "submit":
        subs[nonce] = Submission(
            nonce, str(entry.get("api")), str(entry.get("model")), str(entry.get("endpoint")),
            int(entry.get("count") or 0), float(entry.get("t0") or 0.0),
            float(entry.get("worst_usd") or 0.0), list(entry.get("items") or []),
            updated=float(entry.get("t") or 0.0),
        )
        return
    sub = subs.get(nonce)
    if sub is None:
        return
    sub.updated = float(entry.get("t") or sub.updated)
    if op == "uploaded":
        sub.file_id = entry.get("file_id")
    elif op == "submitted":
        sub.state, sub.batch_id = SUBMITTED, entry.get("batch_id")
        sub.adopted = bool(entry.get("adopted"))
        sub.status = entry.get("status") or sub.status
    elif op in ("rejected", "abandoned"):
        sub.state, sub.message = op, str(entry.get("message") or "")
        sub.items = []  # nothing of it can complete: its ids need not be held in memory
    elif op == "disowned":
        sub.disowned.append(str(entry.get("batch_id")))
        sub.state, sub.batch_id, sub.adopted = INTENT, None, False
    elif op == "status":
        sub.status = entry.get("status")
        sub.counts = dict(entry.get("counts") or {})
    elif op == "collected":
        sub.state = COLLECTED
        sub.status = entry.get("status") or sub.status
        sub.counts = dict(entry.get("counts") or sub.counts)
        sub.cost_usd = entry.get("cost_usd")
        sub.items = []
    elif op == "purged":
        sub.purged = True


def read_journal(path: Path) -> dict[str, Submission]:
    """The submissions of a journal, in the order they were made (read-only; a torn tail is skipped)."""
    subs: dict[str, Submission] = {}
    for _, entry in read_records(path):
        if isinstance(entry, dict):
            _apply(subs, entry)
    return subs


def open_submissions(output: Path) -> list[Submission]:
    """The submissions of an output's journal that may still complete (none without a journal)."""
    try:
        subs = read_journal(journal_path(output))
    except OSError:  # an output folder that is not one: preflight says so, in one line
        return []
    return [sub for sub in subs.values() if sub.may_complete]


class Journal:
    """The journal of one output, appended to by the run that holds the output's lock."""

    def __init__(self, output: Path) -> None:
        self.path = journal_path(output)
        self._fd: int | None = None
        self.submissions: dict[str, Submission] = {}
        self.repaired_bytes = 0

    def open(self) -> dict[str, Submission]:
        """Cut a torn last line off, replay the journal and open it for appending."""
        self.repaired_bytes = repair_tail(self.path)
        self.submissions = read_journal(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self.submissions

    def append(self, op: str, nonce: str, **fields: Any) -> None:
        """Write one event and fsync it: once this returns, a kill cannot lose it."""
        entry = {"op": op, "nonce": nonce, "t": round(time.time(), 3), **fields}
        line = orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE, default=str)
        assert self._fd is not None, "the journal is not open"
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError as exc:
            raise JobStopped(
                f"cannot write the batch journal {self.path} ({exc.strerror or exc}): "
                "free some space and run again to resume",
                "output_error",
            ) from None
        _apply(self.submissions, entry)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
