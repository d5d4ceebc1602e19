"""Export: a CSV dataset in, a run on the simulator, the same CSV out with its labels."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import job_file, read_jsonl, run_cli, run_job, write_jsonl

from batchrun.errors import ConfigError
from batchrun.export import export

LABELS = {"billing", "bug", "feature", "other"}



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
    assert list(table[0]) == ["id", "text", "metadata.stars", "status", "output", "label", "confidence",
                              "error", "prompt_tokens", "completion_tokens", "cost_usd", "model"]
    assert all(r["label"] in LABELS for r in table)
    assert table[0]["metadata.stars"] == str(int(table[0]["id"][1:]) % 5)
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
                      "output.label": "bug", "output.status": "x", "error": "", "prompt_tokens": "",
                      "completion_tokens": "", "cost_usd": "0.5", "model": "m"}]


@pytest.mark.parametrize(("setup", "message"), [
    ("nothing", "no readable manifest"), ("gone", "is gone"), ("format", "--format must be csv or jsonl")])
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


def test_csv_export_of_every_input_shape_is_one_sheet_a_spreadsheet_reads(tmp_path: Path, sim) -> None:
    # The complaints: custom_id lines got an empty id column, every request key (prompt,
    # messages, body, url...) became a column, metadata was one JSON blob, costs read 4.05e-06.
    user = [{"role": "user", "content": "Say hi."}]
    lines: list[dict[str, Any]] = [
        {"custom_id": "batch-1", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "openai/gpt-4o-mini", "max_tokens": 8, "messages": user},
         "metadata": {"row": 1, "team": "a"}},
        {"custom_id": "chat-2", "messages": user, "temperature": 0, "metadata": {"row": 2}},
        {"id": "prompt-3", "prompt": "Say hello.", "max_tokens": 8, "metadata": {"row": 3, "team": "b"}},
        {"custom_id": "row-4", "text": "great phone", "metadata": {"row": 4}},
    ]
    source = write_jsonl(tmp_path / "mixed.jsonl", lines)
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\ntemplate = "Label: {{text}}"')
    assert run_job(job).exit_code == 0

    done = run_cli("export", tmp_path / "out.jsonl", "--input-order", "-o", tmp_path / "sheet.csv")
    assert done.returncode == 0, done.stderr
    rows = read_csv(tmp_path / "sheet.csv")
    assert list(rows[0]) == ["id", "text", "metadata.row", "metadata.team", "status", "output", "error",
                             "prompt_tokens", "completion_tokens", "cost_usd", "model"]
    assert [r["id"] for r in rows] == ["batch-1", "chat-2", "prompt-3", "row-4"]
    assert [r["metadata.row"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["metadata.team"] for r in rows] == ["a", "", "b", ""]
    assert [r["text"] for r in rows] == ["", "", "", "great phone"]
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    for row in rows:
        record = records[row["id"]]
        assert row["status"] == "ok" and row["output"]
        assert int(row["prompt_tokens"]) == record["usage"]["prompt_tokens"] > 0
        assert int(row["completion_tokens"]) == record["usage"]["completion_tokens"]
        assert "e" not in row["cost_usd"].lower() and row["cost_usd"].startswith("0.")
        assert abs(float(row["cost_usd"]) - record["billed_usd"]) < 1e-10

    # The JSONL export stays complete: every input field, the metadata and the usage.
    full = read_jsonl(export(tmp_path / "out.jsonl", fmt="jsonl", input_order=True).path)
    assert [r["input"] for r in full] == lines
    assert [r["metadata"] for r in full] == [line["metadata"] for line in lines]
    assert all(r["prompt_tokens"] > 0 for r in full)


@pytest.mark.parametrize(("value", "text"), [
    (4.049999999999999e-06, "0.00000405"), (0.0, "0"), (0, "0"), (1.5, "1.5"), (2e-11, "0"),
    (0.0000129, "0.0000129"), (None, ""),
])
def test_costs_are_plain_decimals(value: Any, text: str) -> None:
    from batchrun.export import _decimal

    assert _decimal(value) == text
