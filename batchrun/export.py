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
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import orjson

from batchrun.config import output_paths
from batchrun.errors import ConfigError
from batchrun.idset import IdSet
from batchrun.inputs import TableRow, iter_lines, open_input
from batchrun.schema import reply_text
from batchrun.status import check_results_file, final_records

__all__ = ["ExportResult", "export"]

Format = Literal["csv", "jsonl"]
_LABEL_COLUMNS = ("status", "output", "error", "cost_usd", "model")
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
    replaced atomically. CSV: the input columns, then status, output, error, cost_usd, model,
    then one column per key of the parsed objects (a name already taken gets ``output.`` before
    it). JSONL: ``{"custom_id", "line", "input": {...}, "status", "output", "parsed", ...}``.
    """
    if fmt not in ("csv", "jsonl"):
        raise ConfigError(f"--format must be csv or jsonl, got {fmt!r}")
    check_results_file(output)
    paths = output_paths(output)
    source = input_path or _manifest_input(paths["manifest"], output)
    parse_json = _asks_for_json(paths["manifest"])
    labels, parsed_keys = _load_labels(paths["results"], parse_json)
    if destination is None:
        stem = paths["manifest"].name[: -len(".manifest.json")]
        destination = output.parent / f"{stem}.export.{fmt}"
    rows = _joined(source, labels, input_order)
    if fmt == "csv":
        columns = _input_columns(source)
        rename = _parsed_columns(parsed_keys, columns)
        count, not_run = _write_atomic(destination, lambda f: _write_csv(f, rows, columns, rename))
    else:
        count, not_run = _write_atomic(destination, lambda f: _write_jsonl(f, rows))
    return ExportResult(destination, count, not_run)


# -- reading --------------------------------------------------------------------------------------

def _manifest_input(manifest: Path, output: Path) -> Path:
    try:
        doc = orjson.loads(manifest.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"no manifest beside {output} ({manifest.name}): give the results file "
                          "of a batchrun job, or the input with --input") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the manifest {manifest}: {exc}") from None
    path = (doc.get("input") or {}).get("path") if isinstance(doc, dict) else None
    if not isinstance(path, str):
        raise ConfigError(f"the manifest {manifest} names no input: give it with --input")
    source = Path(path)
    if not source.exists():
        raise ConfigError(f"the input {source} named in {manifest.name} is gone: give it with --input")
    return source


def _asks_for_json(manifest: Path) -> bool:
    """Whether the job's own params ask for JSON replies (then text is parsed when no ``parsed``)."""
    try:
        doc = orjson.loads(manifest.read_bytes())
        params = doc["request"]["params"]
        return params["response_format"]["type"] in ("json_schema", "json_object")
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return False


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
        "cost_usd": cost,
        "model": record.get("model"),
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
            yield custom_id, line, fields, labels.get(custom_id) or _not_run(custom_id)
        return
    inputs: dict[str, tuple[int | None, dict[str, Any]]] = {}
    for line, custom_id, fields in _input_rows(source):
        if custom_id in labels:
            inputs[custom_id] = (line, fields)
    for custom_id, label in labels.items():
        at, row = inputs.get(custom_id, (None, {}))
        yield custom_id, at, row, label


def _not_run(custom_id: str) -> dict[str, Any]:
    return {"custom_id": custom_id, "status": _NOT_RUN, "output": None, "parsed": None,
            "error": None, "cost_usd": None, "model": None}


def _input_columns(source: Path) -> list[str]:
    columns: dict[str, None] = {}
    for _, _, fields in _input_rows(source):
        columns.update(dict.fromkeys(fields))
    return list(columns)


def _parsed_columns(parsed_keys: dict[str, None], input_columns: list[str]) -> dict[str, str]:
    taken = set(input_columns) | set(_LABEL_COLUMNS)
    return {key: f"output.{key}" if key in taken else key for key in parsed_keys}


# -- writing --------------------------------------------------------------------------------------

def _write_atomic(destination: Path, write: Any) -> tuple[int, int]:
    if destination.is_dir():
        raise ConfigError(f"{destination} is a folder: give the export's file name with -o")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    except OSError as exc:
        raise _cannot_write(destination, exc) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            counts = write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, destination)
    except OSError as exc:  # the input is read through open_input, whose errors are ConfigErrors
        Path(temp).unlink(missing_ok=True)
        raise _cannot_write(destination, exc) from None
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


def _write_csv(f: Any, rows: Any, columns: list[str], rename: dict[str, str]) -> tuple[int, int]:
    label_names = [f"output.{c}" if c in columns else c for c in _LABEL_COLUMNS]
    writer = csv.writer(f)
    writer.writerow([*columns, *label_names, *rename.values()])
    count = not_run = 0
    for _, _, fields, label in rows:
        parsed = label["parsed"] if isinstance(label["parsed"], dict) else {}
        output = label["output"] if label["parsed"] is None else label["parsed"]
        values = {**label, "output": output}
        writer.writerow([
            *(_cell(fields.get(c)) for c in columns),
            *(_cell(values[c]) for c in _LABEL_COLUMNS),
            *(_cell(parsed.get(k)) for k in rename),
        ])
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
