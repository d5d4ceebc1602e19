"""Export a job as a labeled dataset: each input row's fields joined with its result, CSV or JSONL.

The input is the one the output's manifest names (or ``input_path``); it is streamed. The results
are not: each id's label columns (its text or parsed object, status, error, cost, model) are held
in a dict, so memory grows with the number of ids times the length of their replies (short labels:
~1 GB per few million rows; long generations need more). The default order is the results
file's (completion order), then the ids still failing; it also holds the input fields of those ids.
``input_order=True`` streams the input and writes one row per input row instead, in line order,
rows not run yet with status ``not_run``: it holds only the results.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import orjson

from batchrun.config import output_paths
from batchrun.errors import ConfigError
from batchrun.idset import IdSet
from batchrun.inputs import TableRow, is_table, iter_lines, open_input
from batchrun.ledger import final_records, read_manifest
from batchrun.schema import reply_text
from batchrun.status import check_results_file

__all__ = ["ExportResult", "export"]

Format = Literal["csv", "jsonl"]
_LABEL_COLUMNS = (
    "status", "output", "error", "prompt_tokens", "completion_tokens", "cost_usd", "model",
)
_NOT_RUN = "not_run"


class ExportResult:
    """What ``export`` wrote: where, how many rows, and how many of them have no result yet."""

    def __init__(self, path: Path, rows: int, not_run: int) -> None:
        self.path = path
        self.rows = rows
        self.not_run = not_run

    def __repr__(self) -> str:
        return f"ExportResult(path={self.path!r}, rows={self.rows}, not_run={self.not_run})"


def export(
    output: Path,
    *,
    fmt: Format = "csv",
    destination: Path | None = None,
    input_order: bool = False,
    input_path: Path | None = None,
) -> ExportResult:
    """Join the results in ``output`` with their input rows and write them to ``destination``.

    ``destination`` defaults to ``<stem>.export.csv`` (or ``.jsonl``) beside the output; it is
    replaced atomically. CSV, for a spreadsheet: ``id`` (the id the run gave the line), the input's
    data columns (a CSV's columns, a template row's fields; not the request of a chat, prompt or
    batch line), ``metadata.<key>`` per key of the kept metadata, then status, output, one column
    per key of the parsed objects, error, prompt_tokens, completion_tokens, cost_usd (a plain
    decimal) and model; a name already taken gets ``output.`` before it. JSONL, complete:
    ``{"custom_id", "line", "input": {every field}, "status", "output", "parsed", ..., "metadata"}``.
    """
    if fmt not in ("csv", "jsonl"):
        raise ConfigError(f"--format must be csv or jsonl, got {fmt!r}")
    check_results_file(output)
    paths = output_paths(output)
    manifest = read_manifest(output)
    source = input_path or _manifest_input(manifest, paths["manifest"], output)
    parse_json = _asks_for_json(manifest)
    labels, parsed_keys = _load_labels(paths["results"], parse_json)
    if destination is None:
        stem = paths["manifest"].name[: -len(".manifest.json")]
        destination = output.parent / f"{stem}.export.{fmt}"
    rows = _joined(source, labels, input_order)
    if fmt == "csv":
        columns = _Columns(source, labels, parsed_keys)
        count, not_run = _write_atomic(destination, lambda f: _write_csv(f, rows, columns))
    else:
        count, not_run = _write_atomic(destination, lambda f: _write_jsonl(f, rows))
    return ExportResult(destination, count, not_run)


# -- reading --------------------------------------------------------------------------------------

def _manifest_input(doc: dict[str, Any] | None, manifest: Path, output: Path) -> Path:
    if doc is None:
        raise ConfigError(f"no readable manifest beside {output} ({manifest.name}): give the results "
                          "file of a batchrun job, or the input with --input")
    path = (doc.get("input") or {}).get("path")
    if not isinstance(path, str):
        raise ConfigError(f"the manifest {manifest} names no input: give it with --input")
    source = Path(path)
    if not source.exists():
        raise ConfigError(f"the input {source} named in {manifest.name} is gone: give it with --input")
    return source


def _asks_for_json(doc: dict[str, Any] | None) -> bool:
    """Whether the job's own params ask for JSON replies (then text is parsed when no ``parsed``)."""
    try:
        kind = doc["request"]["params"]["response_format"]["type"]  # type: ignore[index]
    except (KeyError, TypeError):
        return False
    return kind in ("json_schema", "json_object")


def _load_labels(output: Path, parse_json: bool) -> tuple[dict[str, dict[str, Any]], dict[str, None]]:
    labels: dict[str, dict[str, Any]] = {}
    parsed_keys: dict[str, None] = {}  # an ordered set
    for record in final_records(output):
        custom_id = str(record.get("custom_id"))
        if custom_id not in labels:
            label = _label(record, parse_json and record.get("error") is None)
            labels[custom_id] = label
            if isinstance(label["parsed"], dict):
                parsed_keys.update(dict.fromkeys(label["parsed"]))
    return labels, parsed_keys


def _label(record: dict[str, Any], parse_json: bool) -> dict[str, Any]:
    error = record.get("error")
    response = record.get("response")
    body = response.get("body") if isinstance(response, dict) else None
    text = reply_text(body) if isinstance(body, dict) and not error else None
    if text is None and isinstance(body, dict) and not error:
        choices = body.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        message = first.get("message") if isinstance(first, dict) else None
        if isinstance(message, dict) and message.get("tool_calls"):
            text = orjson.dumps(message["tool_calls"]).decode()
    parsed = record.get("parsed")
    if parsed is None and parse_json and text is not None:
        parsed = _loose_json(text)
    usage: dict[str, Any] = record["usage"] if isinstance(record.get("usage"), dict) else {}
    cost = record.get("billed_usd")
    if not cost and usage.get("cost_usd") is not None:
        cost = usage["cost_usd"]
    return {
        "custom_id": record.get("custom_id"),
        "status": "ok" if not error else str(error.get("code", "error")),
        "output": text,
        "parsed": parsed,
        "error": error.get("message") if isinstance(error, dict) else None,
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "cost_usd": cost,
        "model": record.get("model"),
        "metadata": record.get("metadata"),
    }


def _loose_json(text: str) -> Any:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    try:
        return orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return None


def _input_rows(source: Path) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Yield (line, id as the runner names it, fields) for every input row, as InputParser reads them."""
    seen = IdSet()
    with open_input(source) as stream:
        for line, raw in iter_lines(stream):
            if isinstance(raw, TableRow):
                fields: Any = raw.row
            else:
                try:
                    fields = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    try:
                        fields = json.loads(raw.decode("utf-8"))
                    except (UnicodeDecodeError, ValueError, RecursionError):
                        fields = None
            if not isinstance(fields, dict):
                yield line, f"line-{line}", {}
                continue
            raw_id = fields.get("custom_id", fields.get("id"))
            custom_id = f"line-{line}" if raw_id is None or raw_id == "" else str(raw_id)
            if not seen.add(custom_id):
                custom_id = f"line-{line}"  # a later duplicate is reported under its line
                seen.add(custom_id)
            yield line, custom_id, fields


def _joined(
    source: Path, labels: dict[str, dict[str, Any]], input_order: bool
) -> Iterator[tuple[str, int | None, dict[str, Any], dict[str, Any]]]:
    if input_order:
        for line, custom_id, fields in _input_rows(source):
            yield custom_id, line, fields, labels.get(custom_id) or _not_run(custom_id, fields)
        return
    inputs: dict[str, tuple[int | None, dict[str, Any]]] = {}
    for line, custom_id, fields in _input_rows(source):
        if custom_id in labels:
            inputs[custom_id] = (line, fields)
    for custom_id, label in labels.items():
        at, row = inputs.get(custom_id, (None, {}))
        yield custom_id, at, row, label


def _not_run(custom_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "status": _NOT_RUN, "output": None, "parsed": None,
            "error": None, "prompt_tokens": None, "completion_tokens": None, "cost_usd": None,
            "model": None, "metadata": fields.get("metadata")}


# Keys of a JSONL line that make it a request (its shape), not a row of data: such a line's fields
# are request parameters, kept complete in the JSONL export, not spreadsheet columns.
_REQUEST_KEYS = ("messages", "prompt", "body")
_ID_FIELDS = ("custom_id", "id")


def _data_fields(fields: dict[str, Any], table: bool) -> dict[str, Any]:
    """The fields of an input row that are data (CSV columns; a template row's fields), not the
    request, the id or the metadata (which get columns of their own)."""
    if not table and any(key in fields for key in _REQUEST_KEYS):
        return {}
    return {k: v for k, v in fields.items() if k not in _ID_FIELDS and (table or k != "metadata")}


class _Columns:
    """The CSV's columns: id, the input's data, metadata.*, the labels, the parsed keys, usage."""

    def __init__(self, source: Path, labels: dict[str, dict[str, Any]], parsed_keys: dict[str, None]) -> None:
        table = is_table(source)
        inputs: dict[str, None] = {}  # ordered sets
        metadata: dict[str, None] = {}
        self.whole_metadata = False  # some metadata is not an object: it gets one JSON column
        for _, _, fields in _input_rows(source):
            inputs.update(dict.fromkeys(_data_fields(fields, table)))
            self._add_metadata(None if table else fields.get("metadata"), metadata)
        for label in labels.values():
            self._add_metadata(label["metadata"], metadata)
        self.table = table
        self.inputs = list(inputs)
        # A kept field of a table row is one of its columns already.
        self.metadata = [key for key in metadata if key not in inputs]
        taken = {"id", *inputs, *(f"metadata.{k}" for k in self.metadata), "metadata"}
        self.labels = {name: f"output.{name}" if name in taken else name for name in _LABEL_COLUMNS}
        taken |= set(self.labels.values())
        self.parsed = {key: f"output.{key}" if key in taken else key for key in parsed_keys}

    def _add_metadata(self, value: Any, keys: dict[str, None]) -> None:
        if isinstance(value, dict):
            keys.update(dict.fromkeys(value))
        elif value is not None:
            self.whole_metadata = True

    def header(self) -> list[str]:
        head = self.labels
        return [
            "id", *self.inputs, *(f"metadata.{k}" for k in self.metadata),
            *(["metadata"] if self.whole_metadata else []),
            head["status"], head["output"], *self.parsed.values(), head["error"],
            head["prompt_tokens"], head["completion_tokens"], head["cost_usd"], head["model"],
        ]

    def row(self, custom_id: str, fields: dict[str, Any], label: dict[str, Any]) -> list[Any]:
        data = _data_fields(fields, self.table)
        metadata = label["metadata"]
        parsed = label["parsed"] if isinstance(label["parsed"], dict) else {}
        output = label["output"] if label["parsed"] is None else label["parsed"]
        kept = metadata if isinstance(metadata, dict) else {}
        return [
            custom_id, *(_cell(data.get(c)) for c in self.inputs),
            *(_cell(kept.get(k)) for k in self.metadata),
            *([_cell(None if isinstance(metadata, dict) else metadata)] if self.whole_metadata else []),
            _cell(label["status"]), _cell(output), *(_cell(parsed.get(k)) for k in self.parsed),
            _cell(label["error"]), _cell(label["prompt_tokens"]), _cell(label["completion_tokens"]),
            _decimal(label["cost_usd"]), _cell(label["model"]),
        ]


# -- writing --------------------------------------------------------------------------------------

def _write_atomic(destination: Path, write: Callable[[Any], tuple[int, int]]) -> tuple[int, int]:
    if destination.is_dir():
        raise ConfigError(f"{destination} is a folder: give the export's file name with -o")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    except OSError as exc:
        raise _cannot_write(destination, exc) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            counts = write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, destination)
    except OSError as exc:  # the input is read through open_input, whose errors are ConfigErrors
        Path(temp).unlink(missing_ok=True)
        raise _cannot_write(destination, exc) from exc
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return counts


def _cannot_write(destination: Path, exc: OSError) -> ConfigError:
    return ConfigError(f"cannot write {destination}: {exc.strerror or exc} (choose another place with -o)")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list, bool)):
        return orjson.dumps(value).decode()
    return value


def _decimal(value: Any) -> str:
    """A cost as a spreadsheet reads it: ``0.00000405``, never ``4.05e-06``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(_cell(value))
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _write_csv(f: Any, rows: Any, columns: _Columns) -> tuple[int, int]:
    writer = csv.writer(f)
    writer.writerow(columns.header())
    count = not_run = 0
    for custom_id, _, fields, label in rows:
        writer.writerow(columns.row(custom_id, fields, label))
        count += 1
        not_run += label["status"] == _NOT_RUN
    return count, not_run


def _write_jsonl(f: Any, rows: Any) -> tuple[int, int]:
    count = not_run = 0
    for custom_id, line, fields, label in rows:
        record = {"custom_id": custom_id, "line": line, "input": fields,
                  **{k: v for k, v in label.items() if k != "custom_id"}}
        try:
            f.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE).decode())
        except TypeError:  # integers beyond 64 bits, which orjson refuses to write
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
        not_run += label["status"] == _NOT_RUN
    return count, not_run
