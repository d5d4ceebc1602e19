"""A CSV's size is its records, not its physical lines: quoted fields may hold line ends.

The plan line, the progress bar's total, ``status`` and ``report`` all count with
``inputs.measure``; a finished job must read as finished.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from conftest import run_cli

from batchrun import inputs
from batchrun.inputs import iter_lines, measure, open_input

HEADER = "id,text\n"


@pytest.mark.parametrize(
    ("name", "body", "records"),
    [
        ("t.csv", "", 0),  # no header at all
        ("t.csv", HEADER, 0),
        ("t.csv", HEADER + "a1,x\na2,y\n", 2),
        ("t.csv", HEADER + 'a1,"l1\nl2"\na2,"x\ny\nz"\n', 2),  # the reproduction
        ("t.csv", HEADER + 'a1,"l1\r\nl2"\r\na2,"x"\r\n', 2),  # CRLF, inside and outside quotes
        ("t.csv", "\ufeff" + HEADER + 'a1,"one, two\n""three"""\n', 1),  # BOM, comma, quote
        ("t.csv", HEADER + "a1,x\n\n , \na2,y", 2),  # blank rows; no line end at the end
        ("t.csv", HEADER + 'a1,"never closed\na2,y\n', 1),  # one bad row: one invalid_input
        ("t.tsv", "id\ttext\na1\t\"x\ny\"\na2\tz\n", 2),
        ("t.csv.gz", HEADER + 'a1,"l1\nl2\nl3"\na2,x\na3,"y\n"\n', 3),
    ],
)
def test_measure_counts_csv_records_as_the_reader_yields_them(
    tmp_path: Path, name: str, body: str, records: int
) -> None:
    path = tmp_path / name
    data = body.encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    size = measure(path)
    assert (size.lines, size.exact) == (records, True)
    assert size.text_bytes == len(data)
    with open_input(path) as stream:
        assert len(list(iter_lines(stream))) == records


def test_a_large_csv_is_estimated_from_a_sample_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scaled down: a 4 KiB sample of a ~100 KiB file stands for 1 MiB of a large one.
    monkeypatch.setattr(inputs, "_EXACT_TABLE_BYTES", 8 * 1024)
    monkeypatch.setattr(inputs, "_BLOCK", 4 * 1024)
    path = tmp_path / "big.csv"
    path.write_text(HEADER + "".join(f'r{i},"first {i}\nsecond\nthird"\n' for i in range(4000)))
    size = measure(path)
    assert not size.exact
    assert 3600 <= size.lines <= 4400  # within 10 %, not the 12,000 physical lines
    assert abs(size.text_bytes - path.stat().st_size) < 0.1 * path.stat().st_size


def test_a_finished_csv_job_with_multiline_fields_reads_as_finished(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_bytes(b'id,text\na1,"l1\nl2"\na2,"x\ny\nz"\n')
    job = tmp_path / "j.toml"
    job.write_text('template="L: {text}"\ninput="t.csv"\n')
    out = tmp_path / "j.jsonl"

    ran = run_cli("run", job, "--sim", "-o", out, "--no-progress")
    assert ran.returncode == 0, ran.stderr
    assert "batchrun: 2 lines from t.csv" in ran.stderr

    status = run_cli("status", out)
    assert status.returncode == 0, status.stderr
    assert "progress 2 of 2 lines (100.0 %)" in status.stdout
    assert "not finished" not in status.stdout

    report = run_cli("report", out)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "j.report.html").read_text()
    assert "2 of 2 input lines finished" in page
