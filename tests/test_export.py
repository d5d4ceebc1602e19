"""Export: a CSV dataset in, a run on the simulator, the same CSV out with its labels."""

from __future__ import annotations

import asyncio
import csv
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import job_file, read_jsonl, run_cli, write_jsonl

from batchrun.config import load_config
from batchrun.errors import ConfigError
from batchrun.export import export
from batchrun.runner import Runner

LABELS = {"billing", "bug", "feature", "other"}


def run_job(job: Path, **overrides: Any):
    return asyncio.run(Runner(load_config(job, overrides), api_key="x").run())


def tickets(path: Path, n: int) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "subject", "body"])
        for i in range(n):
            writer.writerow([f"t{i}", f"Subject {i}, with a comma", f"Body {i}\nsecond line"])
        writer.writerow(["t-bad", "only a subject"])  # no body: invalid_input naming {body}
    return path


def toml_inline(value: Any) -> str:
    """A TOML inline value (tables inline) for a JSON-like value."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_inline(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_inline(v) for v in value) + "]"
    return json.dumps(value)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_csv_in_run_export_csv_out_with_the_original_columns_and_labels(tmp_path: Path, sim) -> None:
    source = tickets(tmp_path / "tickets.csv", 40)
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\n'
                   'template = "Category (billing/bug/feature/other): {subject}\\n{body}"')
    assert run_job(job, limit=30).exit_code == 0  # a trial: 30 rows run, 11 not yet

    partial = run_cli("export", tmp_path / "out.jsonl", "--input-order", "-o", tmp_path / "partial.csv")
    assert partial.returncode == 0, partial.stderr
    assert "41 rows written" in partial.stderr and "11 not run yet" in partial.stderr
    assert run_job(job).exit_code == 1

    done = run_cli("export", tmp_path / "out.jsonl", "--format", "csv", "--input-order",
                   "-o", tmp_path / "labeled.csv")

    assert done.returncode == 0, done.stderr
    rows = read_csv(tmp_path / "labeled.csv")
    assert len(rows) == 41  # one row per input row, in input order
    assert list(rows[0])[:3] == ["id", "subject", "body"]
    assert {"status", "output", "error", "cost_usd", "model"} <= set(rows[0])
    assert [r["id"] for r in rows] == [f"t{i}" for i in range(40)] + ["t-bad"]
    for i, row in enumerate(rows[:40]):
        assert row["subject"] == f"Subject {i}, with a comma"
        assert row["body"] == f"Body {i}\nsecond line"
        assert row["status"] == "ok" and row["output"] in LABELS
        assert float(row["cost_usd"]) > 0 and row["model"] == "google/gemini-2.0-flash-lite-001"
    assert rows[40]["status"] == "invalid_input" and "{body}" in rows[40]["error"]
    assert rows[40]["subject"] == "only a subject" and rows[40]["output"] == ""


def test_default_order_and_jsonl_and_parsed_objects(tmp_path: Path, sim) -> None:
    schema = {"type": "object", "required": ["label", "confidence"], "properties": {
        "label": {"type": "string", "enum": sorted(LABELS)}, "confidence": {"type": "number"}}}
    rows = [{"id": f"r{i}", "text": f"review {i}", "metadata": {"stars": i % 5}} for i in range(12)]
    source = write_jsonl(tmp_path / "reviews.jsonl", rows)
    fmt = {"type": "json_schema", "json_schema": {"name": "l", "schema": schema}}
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\ntemplate = "Label: {{text}}"\n'
                   f"[params]\nmax_tokens = 60\nresponse_format = {toml_inline(fmt)}\n")
    assert run_job(job).exit_code == 0

    out = export(tmp_path / "out.jsonl", fmt="jsonl")
    assert out.path == tmp_path / "out.export.jsonl" and out.rows == 12 and out.not_run == 0
    lines = read_jsonl(out.path)
    assert {r["custom_id"] for r in lines} == {f"r{i}" for i in range(12)}
    first = lines[0]
    assert first["input"]["text"] == f"review {first['custom_id'][1:]}"
    assert first["parsed"]["label"] in LABELS and isinstance(first["parsed"]["confidence"], float)
    assert first["status"] == "ok" and first["line"] == int(first["custom_id"][1:]) + 1

    table = read_csv(export(tmp_path / "out.jsonl").path)
    assert len(table) == 12
    assert list(table[0]) == ["id", "text", "metadata", "status", "output", "error", "cost_usd",
                              "model", "label", "confidence"]
    assert all(r["label"] in LABELS for r in table)
    assert json.loads(table[0]["metadata"]) == {"stars": int(table[0]["id"][1:]) % 5}
    assert json.loads(table[0]["output"])["label"] == table[0]["label"]


def test_a_parsed_key_that_collides_with_an_input_column_is_prefixed(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "label": "gold"}])
    results = tmp_path / "out.jsonl"
    write_jsonl(results, [{"custom_id": "a", "parsed": {"label": "bug", "status": "x"}, "error": None,
                           "response": {"status_code": 200, "body": {"choices": [
                               {"message": {"content": '{"label": "bug"}'}}]}},
                           "billed_usd": 0.5, "model": "m"}])
    (tmp_path / "out.manifest.json").write_text(json.dumps({"input": {"path": str(source)}}))
    table = read_csv(export(results).path)
    assert table == [{"id": "a", "label": "gold", "status": "ok", "output": '{"label":"bug","status":"x"}',
                      "error": "", "cost_usd": "0.5", "model": "m", "output.label": "bug",
                      "output.status": "x"}]


@pytest.mark.parametrize(("setup", "message"), [
    ("nothing", "no manifest"), ("gone", "is gone"), ("format", "--format must be csv or jsonl")])
def test_export_errors(tmp_path: Path, setup: str, message: str) -> None:
    results = tmp_path / "out.jsonl"
    results.write_text("")
    if setup == "gone":
        (tmp_path / "out.manifest.json").write_text(json.dumps({"input": {"path": str(tmp_path / "x.csv")}}))
    with pytest.raises(ConfigError, match=message):
        export(results, fmt="xlsx" if setup == "format" else "csv")  # type: ignore[arg-type]


def test_export_cli_error_is_one_line(tmp_path: Path) -> None:
    done: subprocess.CompletedProcess[str] = run_cli("export", tmp_path / "nothing.jsonl")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "error:" in done.stderr
