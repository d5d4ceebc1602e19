"""Smaller things a new user meets on the command line, each through the real CLI."""

from __future__ import annotations

from pathlib import Path

from conftest import job_file, prompts, read_jsonl, run_cli, write_jsonl

from batchrun import __version__
from batchrun.config import load_config

RATINGS = "id,text\n" + "".join(f"r{i},review number {i}\n" for i in range(120))


def test_a_csv_is_labelled_without_a_job_file(tmp_path: Path, sim) -> None:
    source = tmp_path / "reviews.csv"
    source.write_text(RATINGS)
    out = tmp_path / "out.jsonl"
    flags = ["--template", "Label: {text}", "--system", "Answer in one word."]

    estimate = run_cli("estimate", source, *flags)
    assert estimate.returncode == 0, estimate.stderr
    assert "requests 120  invalid lines 0" in estimate.stdout

    ran = run_cli("run", source, "--base-url", sim.base_url, "-o", out, "--limit", "3", "--no-progress", *flags)
    assert ran.returncode == 0, ran.stderr
    bodies = [r.body for r in sim.ledger.received.chats()]
    assert len(bodies) == 3
    assert all(b["messages"][0] == {"role": "system", "content": "Answer in one word."} for b in bodies)
    assert {b["messages"][1]["content"] for b in bodies} == {f"Label: review number {i}" for i in range(3)}
    assert [r["custom_id"] for r in read_jsonl(out)] == ["r0", "r1", "r2"]


def test_estimate_says_why_no_request_would_be_sent(tmp_path: Path) -> None:
    source = tmp_path / "reviews.csv"
    source.write_text(RATINGS)
    estimate = run_cli("estimate", source)
    assert estimate.returncode == 0, estimate.stderr
    assert ("requests 0  invalid lines 120: rows need a template (--template, or template = "
            '"... {column} ..." in the job file) or a prompt column') in estimate.stdout
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [*prompts(2), {"id": "x"}, {"id": "y"}, "not an object"])
    estimate = run_cli("estimate", mixed, "--json")
    assert '"invalid_reason": {\n    "reason": "no messages or prompt, and no template' in estimate.stdout
    assert '"lines": 2' in estimate.stdout


def test_version_flag_and_bare_batchrun(tmp_path: Path) -> None:
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"batchrun {__version__}"
    bare = run_cli()
    # As click's no_args_is_help does: the help, exit 2, and no "error:" before it.
    assert bare.returncode == 2
    assert bare.stderr.startswith("Usage: batchrun [OPTIONS] COMMAND [ARGS]...")
    assert "error" not in bare.stderr.lower() and "--version" in bare.stderr


def test_rpm_and_tpm_0_clear_the_job_files_ceilings(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(30))
    job = job_file(tmp_path, source, extra="[limits]\nrpm = 6\ntpm = 1000\n")
    limited = run_cli("estimate", job)
    assert "(set by rpm); rpm 6: ≥" in limited.stdout, limited.stdout
    cleared = run_cli("estimate", job, "--rpm", "0", "--tpm", "0")
    assert cleared.returncode == 0, cleared.stderr
    assert "duration: unbounded by rate limits" in cleared.stdout, cleared.stdout
    config = load_config(job, {"rpm": 0, "tpm": 0})
    assert (config.rpm, config.tpm) == (None, None)
    assert "0: none, clearing the job file's" in " ".join(run_cli("run", "--help").stdout.split())


def test_show_says_provider_unknown_instead_of_none(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [*prompts(1), {"custom_id": "bad"}])
    out = tmp_path / "out.jsonl"
    assert run_cli("run", source, "--sim", "-o", out, "--no-progress").returncode == 1
    shown = run_cli("show", out, "bad")
    assert shown.returncode == 0, shown.stderr
    assert "provider unknown" in shown.stdout and "None" not in shown.stdout


def test_no_empty_errors_file_is_left_after_a_run_where_every_line_succeeded(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(4))
    errors = tmp_path / "out.errors.jsonl"
    failing = job_file(tmp_path, source, extra='[sim]\nfault = ["500=1"]\n')
    first = run_cli("run", failing, "--sim", "--max-attempts", "1", "--no-progress")
    assert first.returncode == 1 and len(read_jsonl(errors)) == 4, first.stderr

    healthy = job_file(tmp_path, source)  # same job, the simulator healthy again: all 4 retried
    second = run_cli("run", healthy, "--sim", "--no-progress")
    assert second.returncode == 0, second.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 4
    assert not errors.exists()
    assert "errors in" not in second.stderr

    fresh = tmp_path / "fresh.jsonl"
    assert run_cli("run", source, "--sim", "-o", fresh, "--no-progress").returncode == 0
    assert not (tmp_path / "fresh.errors.jsonl").exists()
