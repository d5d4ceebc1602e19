"""Input and output formats people already have: OpenAI / vLLM batch files, CSV datasets."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import job_file, read_jsonl, run_job, write_jsonl

from batchrun.errors import ConfigError
from batchrun.inputs import TableRow, iter_lines, measure, open_input
from batchrun.records import InputParser, InvalidLine, Request, success_record


def batch_line(custom_id: str, content: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "openai/gpt-4o-mini", "max_tokens": 20,
                     "messages": [{"role": "user", "content": content}], **body}}


# -- a reader written for OpenAI Batch API output files -------------------------------------------

def read_openai_batch_output(path: Path) -> dict[str, str]:
    """The loop such scripts run over an OpenAI batch output file (json, not batchrun)."""
    answers = {}
    with open(path) as f:
        for line in f:
            result = json.loads(line)
            response = result["response"]
            assert result["id"].startswith("batch_req_")
            assert response["request_id"]
            if response["status_code"] == 200:
                answers[result["custom_id"]] = response["body"]["choices"][0]["message"]["content"]
    return answers


def read_openai_batch_errors(path: Path) -> dict[str, tuple[str, str, int | None]]:
    """The loop over an OpenAI batch error file: error.code / error.message, and the status if any."""
    failures = {}
    with open(path) as f:
        for line in f:
            result = json.loads(line)
            error = result["error"]
            status = result["response"]["status_code"] if result["response"] else None
            failures[result["custom_id"]] = (error["code"], error["message"], status)
    return failures


def test_an_openai_batch_file_runs_and_openai_style_readers_read_the_output(tmp_path: Path, sim) -> None:
    lines = [batch_line(f"req-{i}", f"Name a color, please ({i}).") for i in range(20)]
    lines.append(batch_line("flagged", "[[sim:moderation403]] Say something."))
    lines.append(batch_line("too-long", "Hello", max_tokens=10**9))
    lines.append({"custom_id": "embed", "method": "POST", "url": "/v1/embeddings",
                  "body": {"model": "text-embedding-3-small", "input": "hi"}})
    lines.append({"custom_id": "get", "method": "GET", "url": "/v1/chat/completions", "body": {}})
    source = write_jsonl(tmp_path / "batchinput.jsonl", lines)
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"')

    result = run_job(job)

    assert result.exit_code == 1
    answers = read_openai_batch_output(tmp_path / "out.jsonl")
    assert sorted(answers) == sorted(f"req-{i}" for i in range(20))
    assert all(isinstance(text, str) and text for text in answers.values())
    failures = read_openai_batch_errors(tmp_path / "out.errors.jsonl")
    assert set(failures) == {"flagged", "too-long", "embed", "get"}
    assert failures["flagged"][0] == "content_filtered" and failures["flagged"][2] == 403
    assert failures["too-long"][0] in ("invalid_request", "insufficient_credits")
    assert failures["embed"][:1] == ("invalid_input",)
    assert "'/v1/embeddings' is not served" in failures["embed"][1]
    assert failures["embed"][2] is None
    assert "method must be POST" in failures["get"][1]
    # The line's own model is used as written (an OpenAI batch file names it per line).
    assert {r["model"] for r in read_jsonl(tmp_path / "out.jsonl")} == {"openai/gpt-4o-mini"}


def test_vllm_run_batch_lines_run_and_read_back(tmp_path: Path, sim) -> None:
    # vllm run-batch's documented input: max_completion_tokens, and url without a host.
    lines = [
        {"custom_id": "request-1", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "meta-llama/llama-3.1-8b-instruct:free", "max_completion_tokens": 30,
                  "messages": [{"role": "system", "content": "You are a helpful assistant."},
                               {"role": "user", "content": "Hello world!"}]}},
        {"custom_id": "request-2", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "meta-llama/llama-3.1-8b-instruct:free", "max_completion_tokens": 30,
                  "messages": [{"role": "user", "content": "What is the capital of France?"}]}},
    ]
    source = write_jsonl(tmp_path / "vllm.jsonl", lines)
    job = job_file(tmp_path, source, extra=f'base_url = "{sim.base_url}"\nsystem = "unused: lines have one"')

    assert run_job(job).exit_code == 0

    answers = read_openai_batch_output(tmp_path / "out.jsonl")
    assert set(answers) == {"request-1", "request-2"}
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert records["request-2"]["usage"]["completion_tokens"] <= 30


# -- CSV -----------------------------------------------------------------------------------------

TICKETS = (
    'id,subject,body\r\n'
    't1,Charged twice,"I was billed twice, please refund."\r\n'
    '\r\n'
    't2,Crash,"The app crashes\nwhen I upload a photo."\r\n'
    ',No id,Row without an id\r\n'
    't3,Short row\r\n'
    't4,Too,many,values\r\n'
    't1,Dup,A duplicate id\r\n'
)


def _parser(**options: Any) -> InputParser:
    return InputParser(model="m", params={"max_tokens": 4}, **options)


@pytest.mark.parametrize("name", ["tickets.csv", "tickets.csv.gz", "TICKETS.CSV"])
def test_csv_rows_stream_through_open_input_and_iter_lines(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    data = ("\ufeff" + TICKETS).encode()  # with the BOM a spreadsheet writes
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with open_input(path) as stream:
        rows = list(iter_lines(stream))
    assert [line for line, _ in rows] == [2, 4, 6, 7, 8, 9]
    assert all(isinstance(raw, TableRow) for _, raw in rows)
    assert orjson.loads(bytes(rows[0][1])) == {"id": "t1", "subject": "Charged twice",
                                         "body": "I was billed twice, please refund."}
    assert isinstance(rows[1][1], TableRow)
    assert rows[1][1].row["body"] == "The app crashes\nwhen I upload a photo."
    assert measure(path).lines == 6  # records, as iter_lines yields them (a quoted field holds a line end)


def test_csv_rows_become_requests_or_invalid_input_naming_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(TICKETS, newline="")
    parser = _parser(template="Category of: {subject} / {body}", system="Be brief.")
    with open_input(path) as stream:
        items = [parser.parse(raw, line) for line, raw in iter_lines(stream)]
    first, second, no_id, short, wide, dup = items
    assert isinstance(first, Request) and first.custom_id == "t1"
    body = orjson.loads(first.body)
    assert body == {"model": "m", "max_tokens": 4, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Category of: Charged twice / I was billed twice, please refund."}]}
    assert isinstance(second, Request) and "crashes\nwhen" in orjson.loads(second.body)["messages"][1]["content"]
    assert isinstance(no_id, Request) and no_id.custom_id == "line-6"
    assert isinstance(short, InvalidLine) and short.custom_id == "t3"
    assert short.message == "template field {body} is missing from this row"
    assert isinstance(wide, InvalidLine) and "4 values but the header has 3 columns" in wide.message
    assert isinstance(dup, InvalidLine) and "duplicate id 't1'" in dup.message


def test_csv_columns_are_never_sent_as_request_parameters() -> None:
    row = TableRow.make({"id": "a", "prompt": "Hi", "temperature": "hot", "model": "x"})
    request = _parser().parse(row, 2)
    assert isinstance(request, Request)
    assert orjson.loads(request.body) == {"model": "m", "max_tokens": 4,
                                          "messages": [{"role": "user", "content": "Hi"}]}
    missing = _parser().parse(TableRow.make({"id": "b", "text": "Hi"}), 3)
    assert isinstance(missing, InvalidLine) and "rows need a template (--template" in missing.message


def test_csv_bad_utf8_is_one_invalid_row_and_the_rest_run(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"id,text\na,caf\xe9\nb,fine\n")
    parser = _parser(template="{text}")
    with open_input(path) as stream:
        items = [parser.parse(raw, line) for line, raw in iter_lines(stream)]
    assert isinstance(items[0], InvalidLine) and "not valid UTF-8" in items[0].message
    assert items[0].custom_id == "a"
    assert isinstance(items[1], Request)


@pytest.mark.parametrize(("header", "message"), [
    ("id,text,id", "names column 'id' twice"), ("id,,text", "empty column name")])
def test_a_bad_csv_header_is_a_config_error(tmp_path: Path, header: str, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(header + "\n1,2,3\n")
    with open_input(path) as stream, pytest.raises(ConfigError, match=message):
        list(iter_lines(stream))


def test_a_tsv_file_and_fields_longer_than_the_csv_default_limit(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    long_text = "word " * 60_000
    path.write_text(f"id\ttext\nx\t{long_text}\n")
    with open_input(path) as stream:
        ((_, raw),) = list(iter_lines(stream))
    assert isinstance(raw, TableRow)
    assert raw.row["text"] == long_text


def test_a_csv_dataset_runs_end_to_end_on_the_simulator(tmp_path: Path, sim) -> None:
    path = tmp_path / "tickets.csv"
    path.write_text(TICKETS, newline="")
    job = job_file(tmp_path, path, extra=f'base_url = "{sim.base_url}"\n'
                   'template = "Category (billing/bug/feature/other): {subject}: {body}"')

    result = run_job(job)

    assert result.exit_code == 1
    done = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert set(done) == {"t1", "t2", "line-6"}
    assert {r["response"]["body"]["choices"][0]["message"]["content"] for r in done.values()} <= {
        "billing", "bug", "feature", "other"}
    errors = {r["custom_id"]: r["error"] for r in read_jsonl(tmp_path / "out.errors.jsonl")}
    assert set(errors) == {"t3", "t4", "line-9"}
    assert errors["t3"]["line"] == 7 and "{body}" in errors["t3"]["message"]


# -- keep_fields ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "metadata"),
    [
        (b'{"id": "a", "text": "t", "lang": "en", "stars": 5}', {"lang": "en", "stars": 5}),
        (b'{"id": "a", "text": "t", "lang": "en", "metadata": {"row": 7}}', {"row": 7, "lang": "en"}),
        (b'{"id": "a", "text": "t", "metadata": {"lang": "old"}, "lang": "en"}', {"lang": "en"}),
        (b'{"id": "a", "text": "t", "metadata": "note", "lang": "en"}', {"metadata": "note", "lang": "en"}),
        (b'{"id": "a", "text": "t", "metadata": {"row": 7}}', {"row": 7}),
        (b'{"id": "a", "text": "t"}', None),
    ],
    ids=["fields", "merged", "kept-wins", "non-dict-metadata", "none-kept", "nothing"],
)
def test_keep_fields_copies_input_fields_into_metadata(raw: bytes, metadata: Any) -> None:
    request = _parser(template="{text}", keep_fields=["lang", "stars"]).parse(raw, 1)
    assert isinstance(request, Request)
    assert request.metadata == metadata
    record = success_record(request, b"{}", {}, {}, 0.1)
    assert record["metadata"] == metadata
    assert "lang" not in orjson.loads(request.body)


def test_keep_fields_from_a_csv_row_and_on_invalid_lines() -> None:
    parser = _parser(template="{subject} {body}", keep_fields=["subject", "team"])
    ok = parser.parse(TableRow.make({"id": "a", "subject": "S", "body": "B", "team": "eu"}), 2)
    assert isinstance(ok, Request) and ok.metadata == {"subject": "S", "team": "eu"}
    bad = parser.parse(TableRow.make({"id": "b", "subject": "S"}), 3)
    assert isinstance(bad, InvalidLine) and bad.metadata == {"subject": "S"}
    # Without keep_fields a CSV row carries no metadata at all.
    plain = _parser(template="{subject}").parse(TableRow.make({"id": "c", "subject": "S"}), 4)
    assert isinstance(plain, Request) and plain.metadata is None


# -- the schema a request carries -----------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"label": {"enum": ["a", "b"]}}, "required": ["label"]}


def test_requests_carry_their_schema_and_success_records_their_parsed_object() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}
    own = _parser().parse(orjson.dumps({"id": "1", "prompt": "p", "response_format": fmt}), 1)
    job = _parser(schema={"type": "array"}).parse(b'{"id": "2", "prompt": "p"}', 2)
    none = _parser().parse(b'{"id": "3", "prompt": "p"}', 3)
    assert isinstance(own, Request) and own.schema == SCHEMA and own.schema_required
    assert isinstance(job, Request) and job.schema == {"type": "array"} and job.schema_required
    assert "response_format" not in orjson.loads(job.body)  # batchrun never rewrites the request
    assert isinstance(none, Request) and none.schema is None and not none.schema_required
    assert success_record(own, b"{}", {}, {}, 0.1, parsed={"label": "a"})["parsed"] == {"label": "a"}
    assert "parsed" not in success_record(none, b"{}", {}, {}, 0.1)
