"""ledger.py and inputs.py on real files: repair, resume scan, compaction, manifest, lock, input reading."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrun.errors import ConfigError, OutputLocked, ResumeMismatch
from batchrun.inputs import InputSize, fingerprint, iter_lines, measure, open_input
from batchrun.ledger import MANIFEST_FORMAT, Ledger, read_records


def manifest(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "batchrun": "0.1.0",
        "input": {"path": "in.jsonl", "fingerprint": "sha256-sampled:aaaa"},
        "model": "google/gemini-2.0-flash-lite-001",
        "request": {"params": {"max_tokens": 16, "temperature": 0}, "system": None, "template": None},
    }
    base.update(changes)
    return base


def ok(custom_id: str, **extra: Any) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "error": None, **extra}) + b"\n"


def failed(custom_id: str, kind: str, **extra: Any) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "error": {"code": kind, "message": "m"}, **extra}) + b"\n"


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out.jsonl"


def open_ledger(out: Path, m: dict[str, Any] | None = None, *, force: bool = False) -> tuple[Ledger, Any]:
    ledger = Ledger(out)
    state = ledger.open(m or manifest(), force=force)
    return ledger, state


def start_fresh(out: Path) -> None:
    ledger, _ = open_ledger(out)
    ledger.close()


def errors_path(out: Path) -> Path:
    return out.with_name("out.errors.jsonl")


# -- torn-tail repair --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "kept"),
    [
        pytest.param(ok("a") + ok("b") + b'{"custom_id": "c", "err', ok("a") + ok("b"), id="torn-tail"),
        pytest.param(b'{"custom_id": "c"', b"", id="only-a-torn-line"),
        pytest.param(ok("a") + ok("b"), ok("a") + ok("b"), id="whole"),
        pytest.param(b"", b"", id="empty"),
        pytest.param(ok("a") + b"x" * (2 * 1024 * 1024 + 17), ok("a"), id="torn-line-longer-than-a-chunk"),
        pytest.param(b"y" * (1024 * 1024 + 5), b"", id="only-a-torn-line-longer-than-a-chunk"),
    ],
)
def test_torn_tail_is_cut_to_the_last_line_end(out: Path, content: bytes, kept: bytes) -> None:
    start_fresh(out)
    out.write_bytes(content)
    errors_path(out).write_bytes(content)
    ledger, state = open_ledger(out)
    ledger.close()
    assert out.read_bytes() == kept
    assert errors_path(out).read_bytes() == kept
    assert state.repaired_bytes == 2 * (len(content) - len(kept))


def test_appends_after_a_repair_start_on_a_fresh_line(out: Path) -> None:
    start_fresh(out)
    out.write_bytes(ok("a") + b'{"custom_id": "b", "tor')
    ledger, state = open_ledger(out)
    ledger.write(ok("b"), failed("c", "server_error"))
    ledger.close()
    assert out.read_bytes() == ok("a") + ok("b")
    assert errors_path(out).read_bytes() == failed("c", "server_error")
    assert state.done_ids == {"a"}


def test_read_records_skips_the_torn_tail_and_marks_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(ok("a") + b"garbage\n" + ok("b") + b'{"custom_id": "c"')
    assert list(read_records(path)) == [(1, {"custom_id": "a", "error": None}), (2, None),
                                         (3, {"custom_id": "b", "error": None})]
    assert list(read_records(tmp_path / "missing.jsonl")) == []


# -- resume scan --------------------------------------------------------------------------------------


def test_resume_scan(out: Path) -> None:
    start_fresh(out)
    out.write_bytes(ok("a") + ok("b") + b"not json\n" + orjson.dumps({"no": "id"}) + b"\n" + ok("a"))
    errors_path(out).write_bytes(
        failed("a", "server_error")  # failed once, then succeeded: dropped from failed
        + failed("c", "rate_limited")
        + failed("d", "auth_error")
        + failed("c", "invalid_request")  # the last error of an id wins
        + b"{broken\n"
        + orjson.dumps({"custom_id": "e"}) + b"\n"  # no error object: not a failure
    )
    ledger, state = open_ledger(out)
    ledger.close()
    assert state.done_ids == {"a", "b"}
    assert state.failed == {"c": "invalid_request", "d": "auth_error"}
    assert state.corrupt_lines == 2
    assert state.repaired_bytes == 0
    assert state.unavailable_models == []


def test_resume_scan_of_a_new_output_is_empty(out: Path) -> None:
    ledger, state = open_ledger(out)
    ledger.close()
    assert (state.done_ids, state.failed, state.corrupt_lines, state.repaired_bytes) == (set(), {}, 0, 0)
    assert out.exists() and errors_path(out).exists()
    assert orjson.loads(out.with_name("out.manifest.json").read_bytes()) == {
        **manifest(), "unavailable_models": [], "runs": []
    }


def test_writes_append_across_runs(out: Path) -> None:
    ledger, _ = open_ledger(out)
    ledger.write(ok("a"), b"")
    ledger.sync()
    ledger.close()
    ledger, state = open_ledger(out)
    ledger.write(ok("b") + ok("c"), failed("d", "timeout"))
    ledger.close()
    assert out.read_bytes() == ok("a") + ok("b") + ok("c")
    assert state.done_ids == {"a"}
    ledger, state = open_ledger(out)
    ledger.close()
    assert state.done_ids == {"a", "b", "c"} and state.failed == {"d": "timeout"}


# -- compact_errors -----------------------------------------------------------------------------------


def test_compact_errors_keeps_the_last_line_of_each_still_failing_id(out: Path) -> None:
    lines = [
        failed("a", "server_error", n=1),
        failed("b", "timeout", n=1),
        failed("a", "rate_limited", n=2),
        b"{broken\n",
        failed("c", "invalid_request", n=1),
        failed("b", "timeout", n=2),
        failed("a", "invalid_output", n=3),
    ]
    ledger, _ = open_ledger(out)
    ledger.write(ok("b"), b"".join(lines))
    assert ledger.compact_errors({"b"}) == 2  # as the runner calls it: while the ledger is open
    ledger.close()
    assert errors_path(out).read_bytes() == lines[4] + lines[6]
    assert not list(out.parent.glob(".*.tmp"))


def test_compact_errors_leaves_a_clean_file_alone(out: Path) -> None:
    ledger, _ = open_ledger(out)
    ledger.write(b"", failed("a", "timeout") + failed("b", "timeout"))
    ledger.close()
    before = os.stat(errors_path(out))
    assert ledger.compact_errors({"z"}) == 2
    after = os.stat(errors_path(out))
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


@pytest.mark.parametrize(
    ("content", "done", "expected", "count"),
    [
        (failed("a", "timeout"), {"a"}, None, 0),  # no id still failing: no errors file
        (b"", set(), None, 0),
        (failed("a", "timeout") + failed("a", "timeout") + b'{"custom_id": "b", "to', set(),
         failed("a", "timeout"), 1),
    ],
)
def test_compact_errors_edge_cases(
    out: Path, content: bytes, done: set[str], expected: bytes | None, count: int
) -> None:
    errors_path(out).write_bytes(content)
    assert Ledger(out).compact_errors(done) == count
    if expected is None:
        assert not errors_path(out).exists()
    else:
        assert errors_path(out).read_bytes() == expected


def test_compact_errors_without_an_errors_file(out: Path) -> None:
    assert Ledger(out).compact_errors(set()) == 0
    assert not errors_path(out).exists()


# -- manifest -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        pytest.param(
            {"input": {"path": "other.jsonl", "fingerprint": "sha256-sampled:bbbb"}},
            "a different input (made from in.jsonl, whose content differs from other.jsonl)",
            id="input-fingerprint",
        ),
        pytest.param({"model": "openai/gpt-4o-mini"},
                     "a different model (google/gemini-2.0-flash-lite-001 there, openai/gpt-4o-mini now)",
                     id="model"),
        pytest.param(
            {"request": {"params": {"max_tokens": 16, "temperature": 1}, "system": None, "template": None}},
            'a different request params ({"max_tokens":16,"temperature":0} there, '
            '{"max_tokens":16,"temperature":1} now)',
            id="params",
        ),
        pytest.param(
            {"request": {"params": {"max_tokens": 16, "temperature": 0}, "system": "Be terse.", "template": None}},
            'a different request system (null there, "Be terse." now)', id="system",
        ),
        pytest.param({"format": MANIFEST_FORMAT + 1},
                     f"a different format version ({MANIFEST_FORMAT} there, {MANIFEST_FORMAT + 1} now)",
                     id="format"),
    ],
)
def test_manifest_mismatch_names_what_differs(out: Path, changed: dict[str, Any], message: str) -> None:
    ledger, _ = open_ledger(out)
    ledger.write(ok("a"), b"")
    ledger.close()
    with pytest.raises(ResumeMismatch) as caught:
        open_ledger(out, manifest(**changed))
    assert message in str(caught.value)
    assert "--force" in str(caught.value)
    # The refused run released the lock and left the old manifest alone.
    ledger, state = open_ledger(out)
    ledger.close()
    assert state.done_ids == {"a"}


def test_force_overrides_a_mismatch_and_adopts_the_new_manifest(out: Path) -> None:
    start_fresh(out)
    new = manifest(model="openai/gpt-4o-mini")
    ledger, _ = open_ledger(out, new, force=True)
    ledger.close()
    written = orjson.loads(out.with_name("out.manifest.json").read_bytes())
    assert written == {**new, "unavailable_models": [], "runs": []}
    ledger, _ = open_ledger(out, new)  # and now resumes without --force
    ledger.close()


def test_limits_are_not_part_of_the_manifest_check(out: Path) -> None:
    start_fresh(out)
    ledger, _ = open_ledger(out, manifest(batchrun="0.2.0", limits={"rpm": 5}))
    ledger.close()


def test_a_model_marked_unavailable_may_be_replaced_without_force(out: Path) -> None:
    ledger, _ = open_ledger(out)
    ledger.write_manifest({**manifest(), "unavailable_models": ["google/gemini-2.0-flash-lite-001"]})
    ledger.close()
    new = manifest(model="google/gemini-2.5-flash-lite")
    ledger, state = open_ledger(out, new)
    ledger.close()
    assert state.unavailable_models == ["google/gemini-2.0-flash-lite-001"]
    assert orjson.loads(out.with_name("out.manifest.json").read_bytes()) == {
        **new, "unavailable_models": ["google/gemini-2.0-flash-lite-001"], "runs": []
    }


def test_results_without_a_manifest_need_force(out: Path) -> None:
    out.write_bytes(ok("a"))
    with pytest.raises(ResumeMismatch, match="exists but has no manifest"):
        open_ledger(out)
    ledger, state = open_ledger(out, force=True)
    ledger.close()
    assert state.done_ids == {"a"}


def test_an_unreadable_manifest_counts_as_missing(out: Path) -> None:
    start_fresh(out)
    out.with_name("out.manifest.json").write_bytes(b"{torn")
    ledger, _ = open_ledger(out)  # no results yet: nothing to protect
    ledger.close()
    assert orjson.loads(out.with_name("out.manifest.json").read_bytes())["model"] == manifest()["model"]


# -- lock -------------------------------------------------------------------------------------------------


def test_a_second_ledger_in_the_same_process_is_refused(out: Path) -> None:
    first, _ = open_ledger(out)
    try:
        with pytest.raises(OutputLocked, match=f"pid {os.getpid()}"):
            open_ledger(out)
    finally:
        first.close()
    second, _ = open_ledger(out)
    second.close()


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import orjson
    from batchrun.ledger import Ledger
    ledger = Ledger(Path(sys.argv[1]))
    ledger.open(orjson.loads(sys.argv[2]))
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_lock_held_by_another_process_and_freed_by_its_death(out: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(out), orjson.dumps(manifest()).decode()],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(OutputLocked) as caught:
            open_ledger(out)
        assert f"pid {holder.pid}" in str(caught.value)
        assert "choose another output (-o, output=)" in str(caught.value)
    finally:
        holder.kill()  # SIGKILL: no cleanup runs in the holder
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
    assert holder.returncode == -9
    ledger, _ = open_ledger(out)
    ledger.close()


@pytest.mark.parametrize("below", ["out.jsonl", "sub/out.jsonl"])
def test_output_under_a_regular_file_is_a_config_error(tmp_path: Path, below: str) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot create the output folder"):
        Ledger(blocker / below).open(manifest())


# -- inputs ---------------------------------------------------------------------------------------------

_LINES = b'{"a": 1}\r\n\r\n   \n{"b": 2}\n\t\r\n{"c": 3}'
_EXPECTED = [(1, b'{"a": 1}'), (4, b'{"b": 2}'), (6, b'{"c": 3}')]


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_iter_lines_skips_blank_lines_and_handles_crlf(tmp_path: Path, compressed: bool) -> None:
    path = tmp_path / ("in.jsonl.gz" if compressed else "in.jsonl")
    path.write_bytes(gzip.compress(_LINES) if compressed else _LINES)
    with open_input(path) as stream:
        assert list(iter_lines(stream)) == _EXPECTED


def test_gzip_is_detected_by_content_not_name(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(gzip.compress(_LINES))
    with open_input(path) as stream:
        assert list(iter_lines(stream)) == _EXPECTED


def test_a_truncated_gzip_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(gzip.compress(_LINES * 100)[:-20])
    with open_input(path) as stream, pytest.raises(ConfigError, match="cannot read input"):
        list(iter_lines(stream))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.jsonl", "input file not found"),
        (lambda p: p, "input is a folder, not a file"),
    ],
)
def test_open_input_errors(tmp_path: Path, make: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_input(make(tmp_path))


@pytest.mark.parametrize(
    ("content", "size"),
    [
        (b"", InputSize(0, 0, True)),
        (b"a\nb\nc\n", InputSize(3, 6, True)),
        (b"a\nb\nc", InputSize(3, 5, True)),
        (b"x" * (3 * 1024 * 1024) + b"\n" + b"y\n", InputSize(2, 3 * 1024 * 1024 + 3, True)),
    ],
)
def test_measure_counts_lines(tmp_path: Path, content: bytes, size: InputSize) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    assert measure(path) == size
    gz = tmp_path / "in.jsonl.gz"
    gz.write_bytes(gzip.compress(content))
    assert measure(gz) == size


@pytest.mark.parametrize(
    ("data", "lines"),
    [
        (_LINES, 3),
        (b"", 0),
        (b"\n\n\n", 0),
        (b"  \r\n\t\n", 0),
        (b'{"a": 1}', 1),  # no line end at the end
        (b'\n{"a": 1}\n\n\n{"b": 2}\n \n', 2),
        (b"x\n" * 5 + b"   ", 5),  # a blank last line without its line end
    ],
)
def test_measure_counts_the_lines_iter_lines_yields(tmp_path: Path, data: bytes, lines: int) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    assert measure(path).lines == lines
    with open(path, "rb") as stream:
        assert len(list(iter_lines(stream))) == lines


def test_measure_counts_lines_that_straddle_read_blocks(tmp_path: Path) -> None:
    # Lines of 700 bytes and blank lines cross the 1 MiB read blocks at every offset.
    path = tmp_path / "in.jsonl"
    path.write_bytes((b"x" * 700 + b"\n" + b" \r\n") * 4000)
    assert measure(path).lines == 4000


@pytest.mark.parametrize("size", [1000, 1024 * 1024])
def test_fingerprint_changes_when_content_changes(tmp_path: Path, size: int) -> None:
    data = bytes(range(256)) * (size // 256)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(data)
    b.write_bytes(data)
    first = fingerprint(a)
    assert first.startswith("sha256-sampled:") and len(first) == len("sha256-sampled:") + 32
    assert fingerprint(b) == first  # content, not path
    for edit in (0, len(data) - 1):
        changed = bytearray(data)
        changed[edit] ^= 0xFF
        b.write_bytes(bytes(changed))
        assert fingerprint(b) != first
    b.write_bytes(data + b"\n")
    assert fingerprint(b) != first
    b.write_bytes(data)
    assert fingerprint(b) == first
