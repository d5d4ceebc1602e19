"""The batch journal: appended and fsynced, replayed into submissions, a torn tail repaired."""

from __future__ import annotations

from pathlib import Path

from batchrun.batch.journal import Journal, journal_path, read_journal


def _submit(journal: Journal, nonce: str) -> None:
    journal.append("submit", nonce, api="openrouter", model="m", endpoint="/v1/chat/completions",
                   count=2, t0=1000.0, worst_usd=0.5, items=[["a", 1, 0, None, 0.0], ["b", 2, 1, {"k": 1}, 0.0]])


def test_lifecycle_replays(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    assert journal_path(out) == tmp_path / "out.batches.jsonl"
    journal = Journal(out)
    journal.open()
    _submit(journal, "n1")
    sub = journal.submissions["n1"]
    assert sub.state == "intent" and sub.may_complete and list(sub.input_ids()) == ["a", "b"]
    journal.append("submitted", "n1", batch_id="batch-1", status="validating")
    journal.append("status", "n1", batch_id="batch-1", status="in_progress", counts={"total": 2})
    _submit(journal, "n2")
    journal.append("rejected", "n2", status=400, message="no")
    _submit(journal, "n3")
    journal.append("submitted", "n3", batch_id="batch-3", adopted=True)
    journal.append("disowned", "n3", batch_id="batch-3")
    journal.close()

    again = read_journal(journal_path(out))
    assert again["n1"].batch_id == "batch-1" and again["n1"].status == "in_progress"
    assert again["n1"].may_complete
    assert again["n2"].state == "rejected" and not again["n2"].may_complete
    assert again["n3"].state == "intent" and again["n3"].disowned == ["batch-3"]

    journal = Journal(out)
    journal.open()
    journal.append("collected", "n1", batch_id="batch-1", status="completed", cost_usd=0.25)
    journal.append("purged", "n1", batch_id="batch-1")
    journal.close()
    sub = read_journal(journal_path(out))["n1"]
    assert sub.state == "collected" and not sub.may_complete and sub.purged and sub.cost_usd == 0.25
    assert sub.items == [] and sub.count == 2  # a finished submission's ids are not kept in memory


def test_torn_tail_is_cut(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    journal = Journal(out)
    journal.open()
    _submit(journal, "n1")
    journal.close()
    path = journal_path(out)
    with open(path, "ab") as f:
        f.write(b'{"op":"submitted","nonce":"n1","batch_')  # a kill in the middle of a write
    journal = Journal(out)
    subs = journal.open()
    assert journal.repaired_bytes > 0 and subs["n1"].state == "intent"
    journal.append("submitted", "n1", batch_id="batch-9")
    journal.close()
    assert read_journal(path)["n1"].batch_id == "batch-9"
    assert all(line.endswith(b"}") for line in path.read_bytes().splitlines())
