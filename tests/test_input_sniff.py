"""A file that is not text is refused with one line, not read as hundreds of invalid lines."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest
from conftest import read_jsonl, run_cli

from batchrun.inputs import binary_data_at

_RANDOM = random.Random(3).randbytes(200_000)


@pytest.mark.parametrize(
    ("head", "problem"),
    [
        (b"", None),
        (b'{"prompt": "hi"}\n', None),
        ("id,text\na1,caf\u00e9 \u00fcber \u4e2d\u6587\n".encode(), None),
        ("\ufeffid,text\n".encode(), None),  # a spreadsheet's BOM
        ("a,\u00e9\u00e9".encode()[:-1], None),  # a character cut by the end of the sample
        ("id,text\na1,caf\u00e9 cr\u00e8me br\u00fbl\u00e9e\n".encode("latin-1"), None),  # a few bad bytes
        (b'{"prompt": "a"}\n\x00\x01', "binary data at byte 16"),
        (_RANDOM[:8192], f"binary data at byte {_RANDOM.index(0)}"),
        (bytes(range(128, 256)) * 8, "binary data at byte 0"),  # no NUL, but not UTF-8 at all
        ("id,text\n".encode("utf-16"), "it is UTF-16 text: save it as UTF-8"),
        ("id,text\n".encode("utf-16-be").join([b"\xfe\xff", b""]), "it is UTF-16 text: save it as UTF-8"),
    ],
)
def test_binary_data_at(head: bytes, problem: str | None) -> None:
    assert binary_data_at(head) == problem


@pytest.mark.parametrize("name", ["random.jsonl", "random.csv", "random.jsonl.gz"])
def test_random_bytes_are_one_line_and_no_output(tmp_path: Path, name: str) -> None:
    source = tmp_path / name
    source.write_bytes(gzip.compress(_RANDOM) if name.endswith(".gz") else _RANDOM)
    commands: list[list[str | Path]] = [["estimate", source], ["run", source, "--sim", "-o", tmp_path / "out.jsonl"]]
    for command in commands:
        ran = run_cli(*command)
        assert ran.returncode == 2, ran.stderr
        lines = ran.stderr.strip().splitlines()
        assert lines == [f"batchrun: error: {source} is not a JSONL or CSV text file "
                         f"(binary data at byte {_RANDOM.index(0)})"], ran.stderr
    # Refused at config load: no invalid_input record per "line", no output file at all.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == [name]


def test_a_latin1_file_still_runs_its_good_lines(tmp_path: Path) -> None:
    source = tmp_path / "old.jsonl"
    source.write_bytes('{"id": "a", "prompt": "hi"}\n{"id": "b", "prompt": "caf\u00e9"}\n'.encode("latin-1"))
    ran = run_cli("run", source, "--sim", "-o", tmp_path / "out.jsonl", "--no-progress")
    assert ran.returncode == 1, ran.stderr
    (bad,) = read_jsonl(tmp_path / "out.errors.jsonl")
    assert bad["error"]["code"] == "invalid_input" and "UTF-8" in bad["error"]["message"]
