"""Mistakes a new user makes get one clear line and exit 2, never a traceback.

Every case runs the real CLI as a process. Read-only files are made with chmod; as root (who
writes anyway) the CLI runs without CAP_DAC_OVERRIDE, so the permission bits count for it too.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import batchrun_cmd, cli_env, job_file, prompts, read_jsonl, run_cli, write_jsonl


def one_line_error(ran: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Assert exit 2 with one ``batchrun: error:`` line on stderr holding ``expected``; return it."""
    lines = [line for line in ran.stderr.splitlines() if line.strip()]
    assert ran.returncode == 2, ran.stderr
    assert "Traceback" not in ran.stderr
    assert len(lines) == 1 and lines[0].startswith("batchrun: error: "), ran.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def run_unprivileged(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI as ``run_cli`` does, but bound by file permissions even as root."""
    command = batchrun_cmd(*args)
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: permission bits do not bind root")
        command = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=cli_env())


@pytest.fixture
def finished_job(tmp_path: Path) -> Path:
    """A finished job with one failed line: out.jsonl, out.errors.jsonl and the manifest."""
    source = write_jsonl(tmp_path / "in.jsonl", [*prompts(3), {"custom_id": "bad", "nothing": 1}])
    ran = run_cli("run", source, "--sim", "-o", tmp_path / "out.jsonl", "--no-progress")
    assert ran.returncode == 1, ran.stderr
    return tmp_path / "out.jsonl"


@pytest.fixture
def read_only() -> Iterator[list[Path]]:
    """Paths appended to it lose their write bits for the test and get them back after."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def make_read_only(paths: list[Path], path: Path) -> None:
    path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    paths.append(path)


# -- the job file's [sim] table ------------------------------------------------------------------

@pytest.mark.parametrize(
    ("sim_table", "expected"),
    [
        ('fault = ["999=0.5"]', "unknown kind '999'"),
        ('faults = ["500=2"]', "rate must be between 0 and 1"),
        ('fault = ["500=0.7", "502=0.7"]', "add up to 1.4"),
        ('fault = "500"', "expected KIND=RATE"),
        ("fault = 3", "bad fault spec '3': expected KIND=RATE"),
        ("latency = -1", "latency must be >= 0"),
        ('latency = "slow"', "latency: invalid float value: 'slow'"),
        ("latency = [1, 2]", "latency takes one value, got a list"),
        ("latncy = 0.1", "unknown key 'latncy'"),
        ('dialect = "anthropic"', "dialect: invalid choice: 'anthropic'"),
        ('batch_row_fault = ["nope=0.1"]', "nope"),
        ("no_cost = 1", "no_cost must be true or false"),
    ],
)
def test_a_bad_sim_table_is_one_line_at_config_load(tmp_path: Path, sim_table: str, expected: str) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    job = job_file(tmp_path, source, extra=f"[sim]\n{sim_table}")
    one_line_error(run_cli("run", job, "--sim", "--no-progress"), "[sim] in ", expected)
    assert not (tmp_path / "out.jsonl").exists()  # refused before the output was touched


@pytest.mark.parametrize("sim_table", [
    'fault = ["500=1"]', 'faults = ["500=1"]', 'faults = {"500" = 1.0}',
    'fault = ["500=1"]\nno_batch_api = true\nbatch_processing = 0.5\nlatency = 0.01',  # any sim flag
])
def test_each_way_of_writing_sim_faults_reaches_the_simulator(tmp_path: Path, sim_table: str) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    job = job_file(tmp_path, source, extra=f"[sim]\n{sim_table}")
    ran = run_cli("run", job, "--sim", "--no-progress", "--max-attempts", "1")
    assert ran.returncode == 1, ran.stderr
    assert {r["error"]["code"] for r in read_jsonl(tmp_path / "out.errors.jsonl")} == {"server_error"}


# -- a folder where a file is wanted ---------------------------------------------------------------

@pytest.mark.parametrize(
    "command", [["status"], ["report"], ["export"], ["show", "p0"], ["status", "--json"]]
)
def test_reading_commands_given_a_folder_say_so(finished_job: Path, command: list[str]) -> None:
    folder = finished_job.parent
    line = one_line_error(run_cli(command[0], folder, *command[1:]), "is a folder, not a results file")
    assert f"e.g. {folder / 'out.jsonl'}" in line  # the results file the folder holds


def test_a_folder_as_the_output_is_refused(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    folder = tmp_path / "results"
    folder.mkdir()
    one_line_error(run_cli("run", source, "--sim", "-o", folder, "--force"), "is a folder")
    one_line_error(run_cli("estimate", source, "-o", folder), "is a folder")
    assert list(folder.iterdir()) == []


def test_report_and_export_into_a_folder_given_as_the_file_say_so(finished_job: Path) -> None:
    folder = finished_job.parent / "sub"
    folder.mkdir()
    one_line_error(run_cli("export", finished_job, "-o", folder), "is a folder")
    one_line_error(run_cli("report", finished_job, "-o", folder), "cannot write the report")


# -- read-only files and folders ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["out.jsonl", "out.errors.jsonl"])
def test_resuming_into_a_read_only_output_file_is_one_line(
    finished_job: Path, read_only: list[Path], name: str
) -> None:
    target = finished_job.parent / name
    before = target.read_bytes()
    make_read_only(read_only, target)
    ran = run_unprivileged("run", finished_job.parent / "in.jsonl", "--sim", "-o", finished_job,
                           "--retry-failed", "--no-progress")
    one_line_error(ran, f"cannot write the output {target}", "Permission denied")
    assert target.read_bytes() == before


@pytest.mark.parametrize("command", ["report", "export"])
def test_report_and_export_into_a_read_only_folder_are_one_line(
    tmp_path: Path, read_only: list[Path], command: str
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    source = write_jsonl(folder / "in.jsonl", prompts(2))
    ran = run_cli("run", source, "--sim", "-o", folder / "out.jsonl", "--no-progress")
    assert ran.returncode == 0, ran.stderr
    make_read_only(read_only, folder)
    one_line_error(run_unprivileged(command, folder / "out.jsonl"), "cannot write", "Permission denied",
                   "choose another place with -o")


# -- an input file given where results are wanted ----------------------------------------------

@pytest.mark.parametrize("command", ["status", "report", "export", "show"])
def test_an_input_file_is_not_taken_for_results(tmp_path: Path, command: str) -> None:
    source = write_jsonl(tmp_path / "small.jsonl", prompts(20))
    extra = ["p0"] if command == "show" else []
    one_line_error(
        run_cli(command, source, *extra),
        f"{source} looks like an input file (its lines are requests, not results): "
        "give the results file of a run (-o of batchrun run)",
    )


def test_a_csv_or_a_non_json_file_is_not_taken_for_results(tmp_path: Path) -> None:
    table = tmp_path / "rows.csv"
    table.write_text("id,text\na,b\n")
    one_line_error(run_cli("status", table), "looks like an input file")
    text = tmp_path / "notes.jsonl"
    text.write_text("just some words\n")
    one_line_error(run_cli("report", text), "is not a results file")


def test_results_files_are_still_read_with_or_without_their_manifest(finished_job: Path) -> None:
    ran = run_cli("status", finished_job)
    assert ran.returncode == 0 and "succeeded 3" in ran.stdout, ran.stderr
    # An OpenAI Batch API output file has no manifest; its records say what it is.
    (finished_job.parent / "out.manifest.json").unlink()
    ran = run_cli("status", finished_job)
    assert ran.returncode == 0 and "succeeded 3" in ran.stdout, ran.stderr
