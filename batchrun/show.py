"""One id's story for debugging: its final record and the request body its input line became.

The final record is the id's results line if it has one (a success is final), else its last errors
line. The request is rebuilt, not stored: the manifest names the input and the job's model and
parameters, and the same ``InputParser`` as the runner turns the id's line into the body it sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchrun.config import output_paths
from batchrun.engine.preflight import parser_for_manifest
from batchrun.errors import ConfigError, IdNotFound
from batchrun.inputs import iter_lines, open_input
from batchrun.ledger import read_manifest, read_records
from batchrun.records import InvalidLine
from batchrun.status import check_results_file

__all__ = ["Shown", "find_request", "show"]

_LINE_ID = re.compile(r"line-(\d+)")


@dataclass
class Shown:
    """An id's final record and, when its input line was found, the request body it became."""

    record: dict[str, Any]
    source: str  # "results" or "errors"
    request: dict[str, Any] | None
    input_line: int | None
    input_path: str | None
    request_note: str | None  # why there is no request, or what the line's problem is

    def to_dict(self) -> dict[str, Any]:
        return {
            "record": self.record, "source": self.source, "request": self.request,
            "input_line": self.input_line, "input": self.input_path, "request_note": self.request_note,
        }

    def lines(self) -> list[str]:
        record = self.record
        error = record.get("error") if isinstance(record.get("error"), dict) else None
        state = "succeeded" if error is None else f"failed: {error.get('code')}"
        out = [f"id {record.get('custom_id')}  ({record.get('id')}, from the {self.source} file)"]
        out.append(
            f"status {state}  attempts {record.get('attempts')}  latency {_seconds(record.get('latency_s'))}"
            f"  finished {record.get('finished_at')}"
        )
        out.append(f"model {record.get('model') or 'unknown'}  provider {record.get('provider') or 'unknown'}")
        usage = record.get("usage") if isinstance(record.get("usage"), dict) else None
        if usage:
            cost = usage.get("cost_usd")
            out.append(
                f"tokens in {usage.get('prompt_tokens')} out {usage.get('completion_tokens')}"
                f" (cached {usage.get('cached_tokens')}, reasoning {usage.get('reasoning_tokens')})"
                f"  cost {'unknown' if cost is None else f'${cost:.9f}'} ({usage.get('cost_source')})"
                f"  billed ${record.get('billed_usd') or 0.0:.9f}"
            )
        else:
            out.append(f"no usage  billed ${record.get('billed_usd') or 0.0:.9f}")
        if error is not None:
            out.append(f"error: {error.get('message')}")
            if error.get("status") is not None:
                out.append(f"last HTTP status {error.get('status')}")
        response = record.get("response") if isinstance(record.get("response"), dict) else None
        content = _content(response.get("body")) if response else None
        if content is not None:
            out.append("response:")
            out.extend("  " + line for line in content.splitlines() or [""])
        elif response and response.get("body") is not None and error is not None:
            out.append("response body:")
            out.append("  " + orjson.dumps(response.get("body")).decode()[:2000])
        if self.request is not None:
            out.append(f"request (line {self.input_line} of {self.input_path}):")
            text = orjson.dumps(self.request, option=orjson.OPT_INDENT_2).decode()
            out.extend("  " + line for line in text.splitlines())
        elif self.request_note:
            out.append(f"request: {self.request_note}")
        return out


def show(output: Path, custom_id: str) -> Shown:
    """The final record of ``custom_id`` in ``output`` and the request it was sent as."""
    paths = output_paths(output)
    check_results_file(output)
    found: tuple[dict[str, Any], str] | None = None
    for source in ("results", "errors"):
        for _, record in read_records(paths[source]):
            if isinstance(record, dict) and str(record.get("custom_id")) == custom_id:
                found = (record, source)  # the last line of an id wins
        if found is not None:
            break
    if found is None:
        raise IdNotFound(f"id {custom_id!r} is not in {paths['results'].name} or {paths['errors'].name}")
    record, source = found
    manifest = read_manifest(output)
    raw_error = record.get("error")
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    line_hint = error.get("line") if isinstance(error.get("line"), int) else None
    request = note = input_path = None
    line = None
    if manifest is None:
        note = "no manifest beside the output, so the input is unknown"
    else:
        input_path = (manifest.get("input") or {}).get("path")
        try:
            if error.get("code") == "invalid_input" and line_hint is not None:
                line, note = line_hint, _raw_line(Path(str(input_path)), line_hint)
            else:
                line, request, note = find_request(manifest, custom_id, line_hint)
        except ConfigError as exc:
            note = str(exc)
    return Shown(record, source, request, line, input_path, note)


def find_request(
    manifest: dict[str, Any], custom_id: str, line_hint: int | None = None
) -> tuple[int | None, dict[str, Any] | None, str | None]:
    """(line, request body, note) for ``custom_id`` in the manifest's input, streaming it.

    Only lines that can carry the id (its text appears in them, or the id is ``line-N``) are
    parsed; the first such line wins, as it does in a run.
    """
    raw_path = (manifest.get("input") or {}).get("path")
    if not isinstance(raw_path, str):
        return None, None, "the manifest names no input file"
    parser = parser_for_manifest(manifest)
    numbered = _LINE_ID.fullmatch(custom_id)
    wanted_line = line_hint or (int(numbered.group(1)) if numbered else None)
    needle = orjson.dumps(custom_id)[1:-1]
    with open_input(Path(raw_path)) as stream:
        for number, raw in iter_lines(stream):
            if wanted_line is not None and number != wanted_line and needle not in raw:
                continue
            if wanted_line is None and needle not in raw:
                continue
            item = parser.parse(raw, number)
            if item is None or item.custom_id != custom_id:
                continue
            if isinstance(item, InvalidLine):
                return number, None, f"line {number} is not a valid request: {item.message}"
            return number, orjson.loads(item.body), None
    return None, None, f"no line with id {custom_id!r} in {raw_path} (was the input changed?)"


def _raw_line(path: Path, wanted: int) -> str:
    """The text of a line that was not sent (an ``invalid_input``), cut to 2,000 characters."""
    with open_input(path) as stream:
        for number, raw in iter_lines(stream):
            if number == wanted:
                text = raw[:2000].decode("utf-8", errors="replace")
                return f"not sent (invalid input); line {number} reads: {text}"
    return f"not sent (invalid input); line {wanted} is no longer in {path}"


def _content(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    if isinstance(content, str):
        return content
    if message.get("tool_calls"):
        return orjson.dumps(message["tool_calls"]).decode()
    return None


def _seconds(value: Any) -> str:
    return f"{value:.3f} s" if isinstance(value, (int, float)) else "n/a"
