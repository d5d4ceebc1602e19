"""OpenAI's Batch API on the wire: upload a JSONL file, create the batch with the nonce in its
metadata, read the output and error files, delete the files (docs/batch-wire.md Part B).

A lost reply of ``POST /batches`` is found again by listing batches newest first down to the
submission's t0 and matching ``metadata.batchrun_nonce``: on OpenAI the list itself is the proof.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from batchrun.batch.info import ApiReply, BatchInfo
from batchrun.batch.journal import Submission
from batchrun.batch.openrouter import CLOCK_SKEW_S, BatchApiError, Send
from batchrun.batch.plan import ENDPOINT, OPENAI_LIMITS, openai_line, wire_id

__all__ = ["NONCE_KEY", "OpenAIBatches", "multipart"]

NONCE_KEY = "batchrun_nonce"
_LIST_PAGE = 100


def multipart(fields: dict[str, str], filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with text fields and one file; returns (body, content type)."""
    boundary = "batchrun-" + secrets.token_hex(12)
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    parts.append(
        (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
         "Content-Type: application/jsonl\r\n\r\n").encode() + content + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class OpenAIBatches:
    """The client side of OpenAI's Batch API, over a ``send`` that retries idempotent calls."""

    api = "openai"
    limits = OPENAI_LIMITS
    keeps_model_in_body = True  # every line of an OpenAI batch file names its model

    def __init__(self, send: Send) -> None:
        self._send = send

    async def probe(self) -> ApiReply:
        return await self._send("GET", "/batches", params={"limit": 1})

    async def submit(
        self, sub: Submission, bodies: list[bytes], on_uploaded: Callable[[str], None]
    ) -> ApiReply:
        """Upload the input file (unless an earlier try did), then create the batch once."""
        file_id = sub.file_id
        if file_id is None:
            content = b"".join(openai_line(wire_id(sub.nonce, i), body) for i, body in enumerate(bodies))
            data, content_type = multipart({"purpose": "batch"}, f"{sub.nonce}.jsonl", content)
            reply = await self._send("POST", "/files", data=data, content_type=content_type)
            if not reply.ok or not isinstance(reply.body, dict) or not reply.body.get("id"):
                return reply
            file_id = str(reply.body["id"])
            on_uploaded(file_id)
        body = {
            "input_file_id": file_id, "endpoint": ENDPOINT, "completion_window": "24h",
            "metadata": {NONCE_KEY: sub.nonce},
        }
        return await self._send("POST", "/batches", data=orjson.dumps(body), retry=False)

    async def get(self, batch_id: str) -> ApiReply:
        return await self._send("GET", f"/batches/{batch_id}")

    async def candidates(self, sub: Submission, claimed: Iterable[str]) -> list[BatchInfo]:
        """The batch whose metadata carries this submission's nonce, if the list shows one."""
        exclude = set(claimed) | set(sub.disowned)
        params: dict[str, Any] = {"limit": _LIST_PAGE}
        found: list[BatchInfo] = []
        while True:
            reply = await self._send("GET", "/batches", params=params)
            if not reply.ok or not isinstance(reply.body, dict):
                raise BatchApiError("listing batches", reply)
            data = [item for item in reply.body.get("data") or () if isinstance(item, dict)]
            older = False
            for item in data:
                info = BatchInfo.from_json(item)
                if info.created_at and info.created_at < sub.t0 - CLOCK_SKEW_S:
                    older = True  # newest first: the rest were made before this submission
                    break
                if info.metadata.get(NONCE_KEY) == sub.nonce and info.id not in exclude:
                    found.append(info)
            last = reply.body.get("last_id") or (data[-1].get("id") if data else None)
            if older or not reply.body.get("has_more") or not isinstance(last, str):
                return sorted(found, key=lambda info: (info.created_at, info.id))
            params = {"limit": _LIST_PAGE, "after": last}

    async def rows(self, info: BatchInfo) -> list[dict[str, Any]]:
        """The rows of the output file, then of the error file."""
        rows: list[dict[str, Any]] = []
        for file_id in (info.output_file_id, info.error_file_id):
            if not file_id:
                continue
            reply = await self._send("GET", f"/files/{file_id}/content")
            if not reply.ok:
                raise BatchApiError(f"reading the file {file_id} of {info.id}", reply)
            for line in reply.raw.splitlines():
                if line.strip():
                    try:
                        row = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(row, dict):
                        rows.append(row)
        return rows

    async def discard(self, sub: Submission) -> None:
        """Delete the input file of a submission that made no batch (a file costs nothing, but is kept)."""
        if sub.file_id:
            await self._send("DELETE", f"/files/{sub.file_id}")

    async def delete(self, sub: Submission, info: BatchInfo | None) -> bool:
        """Delete the batch's input, output and error files (a batch itself cannot be deleted)."""
        ids = {sub.file_id}
        if info is not None:
            ids |= {info.input_file_id, info.output_file_id, info.error_file_id}
        done = True
        for file_id in sorted(i for i in ids if i):
            reply = await self._send("DELETE", f"/files/{file_id}")
            done = done and (reply.ok or reply.status == 404)
        return done
