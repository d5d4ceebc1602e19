"""OpenAI's Batch API (batch-wire Part B): files, batches, cancel, output and error files."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_request import FileField

from .batch_store import Batch, BatchStore, Rejection, Row, RowResult, random_alnum, unix_s
from .bodies import completion_doc
from .catalog import BATCH_SUFFIX, CATALOG, Model, batch_variant
from .config import SimConfig
from .received import ReceivedLog
from .replies import prompt_tokens, usage_json
from .wire import format_retry_after

__all__ = ["ENDPOINTS", "OpenAIBatches", "validate_file"]

_JSON = "application/json"
ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
_PURPOSES = frozenset({"batch", "fine-tune", "assistants", "vision", "user_data", "evals"})
_FILE_TTL_S = 30 * 86_400
_MAX_REQUESTS = 50_000
_ROW_ERRORS: dict[str, tuple[int, str, str, str]] = {
    # kind: (status_code, type, code, message) of the row's response body
    "429": (429, "rate_limit_error", "rate_limit_exceeded", "Rate limit reached; retry later."),
    "500": (500, "server_error", "server_error", "The server had an error processing the request."),
    "400": (400, "invalid_request_error", "invalid_request_error", "This request is invalid."),
}
_NOT_RUN = {
    "timeout": ("request_timeout", "This request timed out before it completed."),
    "expired": (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
    "cancelled": (
        "batch_cancelled",
        "This request was not executed because the batch was cancelled.",
    ),
}


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    type_: str = "invalid_request_error",
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """OpenAI's error envelope."""
    doc = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.Response(status=status, body=orjson.dumps(doc), content_type=_JSON, headers=headers)


def _json(doc: Any) -> web.Response:
    return web.Response(body=orjson.dumps(doc), content_type=_JSON)


def _close(request: web.Request) -> web.Response:
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=200)


def _hex_id(prefix: str) -> str:
    return prefix + hashlib.sha256(random_alnum(32).encode()).hexdigest()[:32]


# -- async validation: line by line, the first bad line fails the batch -----------------------


def validate_file(batch: Batch, content: bytes | None, purpose: str | None) -> Rejection | None:
    """Parse the input file into the batch's rows, or say which line fails it (B3 codes)."""
    file_id = batch.extra["input_file_id"]
    if content is None:
        return Rejection(f"No file found with id '{file_id}'.", param="input_file_id")
    if purpose != "batch":
        return Rejection(
            f"The input file '{file_id}' must be uploaded with purpose 'batch'.",
            param="input_file_id",
        )
    rows: list[Row] = []
    seen: set[str] = set()
    model: Model | None = None
    model_id = ""
    for line_no, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            return Rejection(
                "This line is not parseable as valid JSON.", code="invalid_json_line", line=line_no
            )
        cid = doc.get("custom_id")
        if not isinstance(cid, str) or not cid:
            return Rejection(
                "Missing required parameter: 'custom_id'.",
                code="missing_required_parameter",
                line=line_no,
                param="custom_id",
            )
        if cid in seen:
            return Rejection(
                "The custom_id for this request is a duplicate of another request. The custom_id "
                "parameter must be unique for each request in a batch.",
                code="duplicate_custom_id",
                line=line_no,
                param="custom_id",
            )
        seen.add(cid)
        if doc.get("method") != "POST":
            return Rejection(
                "The method must be 'POST'.", code="invalid_request", line=line_no, param="method"
            )
        if doc.get("url") != batch.endpoint:
            return Rejection(
                f"The URL provided for this request does not match the batch endpoint "
                f"'{batch.endpoint}'.",
                code="invalid_url",
                line=line_no,
                param="url",
            )
        body = doc.get("body")
        if not isinstance(body, dict):
            return Rejection(
                "The body must be a JSON object.",
                code="invalid_request",
                line=line_no,
                param="body",
            )
        wanted = body.get("model")
        if not isinstance(wanted, str) or not wanted:
            return Rejection(
                "Missing required parameter: 'body.model'.",
                code="invalid_request",
                line=line_no,
                param="body.model",
            )
        if model is None:
            found = CATALOG.get(wanted.removesuffix(BATCH_SUFFIX))
            if found is None or found.retired or not found.batch_providers:
                return Rejection(
                    f"The provided model '{wanted}' is not supported by the Batch API.",
                    code="model_not_found",
                    line=line_no,
                    param="body.model",
                )
            model, model_id = found, wanted
        elif wanted != model_id:
            return Rejection(
                f"The provided model '{wanted}' does not match the model '{model_id}' of the "
                "other requests; a batch takes one model.",
                code="mismatched_model",
                line=line_no,
                param="body.model",
            )
        if body.get("stream") is True:
            return Rejection(
                "Streaming is not supported in the Batch API.",
                code="streaming_unsupported",
                line=line_no,
                param="body.stream",
            )
        rows.append(Row(len(rows), line_no, cid, body))
    if not rows or model is None:
        return Rejection("The input file holds no requests.", param="input_file_id")
    if len(rows) > (batch.extra.get("max_requests") or _MAX_REQUESTS):
        return Rejection(
            f"The input file holds {len(rows):,} requests; a batch takes at most "
            f"{batch.extra.get('max_requests') or _MAX_REQUESTS:,}.",
            param="input_file_id",
        )
    batch.rows = rows
    batch.model = model
    batch.model_id = model_id
    return None


def _enqueued_tokens(batch: Batch) -> int:
    total = 0
    for row in batch.rows:
        messages = row.body.get("messages")
        if isinstance(messages, list):
            total += prompt_tokens(messages, row.body.get("tools"))
    return total


# -- rendering ----------------------------------------------------------------------------------


def _row_doc(batch: Batch, r: RowResult) -> dict[str, Any]:
    cid = r.row.custom_id
    digest = hashlib.sha256(f"{batch.id}\0{cid}".encode()).hexdigest()
    doc: dict[str, Any] = {"id": "batch_req_" + digest[:32], "custom_id": cid}
    request_id = digest[32:64]
    if r.kind in _NOT_RUN:
        code, message = _NOT_RUN[r.kind]
        doc["response"] = None
        doc["error"] = {"code": code, "message": message}
        return doc
    if not r.ok or r.reply is None:
        status, type_, code, message = _ROW_ERRORS.get(r.kind, _ROW_ERRORS["500"])
        error = {"message": message, "type": type_, "param": None, "code": code}
        doc["response"] = {
            "status_code": status,
            "request_id": request_id,
            "body": {"error": error},
        }
        doc["error"] = None
        return doc
    assert batch.model is not None
    model = batch_variant(batch.model)
    usage = usage_json(r.reply, model, "openai")
    body = completion_doc(
        r.gen_id.replace("gen-batch-", "chatcmpl-"), int(r.t), model, r.reply, usage, "openai"
    )
    doc["response"] = {"status_code": 200, "request_id": request_id, "body": body}
    doc["error"] = None
    return doc


def _ts(value: float | None) -> int | None:
    return None if value is None else unix_s(value)


def batch_doc(batch: Batch) -> dict[str, Any]:
    """The Batch object of OpenAI's API."""
    status = batch.status
    counts = (
        batch.counts()
        if status not in ("validating", "failed")
        else {"total": 0, "completed": 0, "failed": 0}
    )
    prompt, completion, cached, reasoning = batch.usage_tokens()
    errors = None
    if batch.error is not None:
        err = batch.error
        errors = {
            "object": "list",
            "data": [
                {"code": err.code, "message": err.message, "param": err.param, "line": err.line}
            ],
        }
    final = batch.finalized_at
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "model": batch.model_id if batch.model is not None else None,
        "errors": errors,
        "input_file_id": batch.extra["input_file_id"],
        "completion_window": "24h",
        "status": status,
        "output_file_id": batch.extra.get("output_file_id"),
        "error_file_id": batch.extra.get("error_file_id"),
        "created_at": unix_s(batch.created),
        "in_progress_at": _ts(batch.in_progress_at),
        "expires_at": unix_s(batch.expires_at),
        "finalizing_at": _ts(batch.finalizing_at),
        "completed_at": _ts(final) if status == "completed" else None,
        "failed_at": _ts(final) if status == "failed" else None,
        "expired_at": _ts(final) if status == "expired" else None,
        "cancelling_at": _ts(batch.cancelling_at),
        "cancelled_at": _ts(final) if status == "cancelled" else None,
        "request_counts": counts,
        "metadata": batch.extra.get("metadata"),
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + completion,
        },
    }


# -- the handlers -------------------------------------------------------------------------------


class OpenAIBatches:
    """The aiohttp handlers of OpenAI's file and batch routes over a BatchStore."""

    def __init__(self, config: SimConfig, store: BatchStore, received: ReceivedLog) -> None:
        self.config = config
        self.store = store
        self.received = received
        self._shuffle_seed = config.seed

    def _gate(self, request: web.Request, body: bytes | None = None) -> web.Response | str | None:
        """Log the request, check auth, then an injected route fault."""
        self.received.add(request, body)
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        keys = self.config.api_keys
        if not token or (keys is not None and token not in keys):
            return error_response(401, "Incorrect API key provided.", code="invalid_api_key")
        fault = self.store.route_fault(request.headers.get("X-Sim-Fault"))
        if fault == "429":
            retry = {"Retry-After": format_retry_after(self.config.retry_after_s)}
            return error_response(
                429,
                "Rate limit reached for requests.",
                code="rate_limit_exceeded",
                type_="requests",
                headers=retry,
            )
        if fault == "500":
            return error_response(
                500, "The server had an error while processing your request.", type_="server_error"
            )
        return fault

    def _tick(self) -> float:
        now = time.time()
        self.store.advance(now)
        self._materialize(now)
        return now

    def _materialize(self, now: float) -> None:
        # Output and error files appear when a batch ends (null ids when a file would be empty).
        for batch in list(self.store.batches.values()):
            if batch.dialect != "openai" or not batch.terminal or batch.extra.get("files_done"):
                continue
            batch.extra["files_done"] = True
            if batch.status == "failed":
                continue
            rows = list(batch.results)
            # Output order is not guaranteed (B4): a shuffle seeded per batch.
            random.Random(f"{self._shuffle_seed}:out:{batch.seq}").shuffle(rows)
            good = [_row_doc(batch, r) for r in rows if r.ok]
            bad = [_row_doc(batch, r) for r in rows if not r.ok]
            for key, docs, kind in (
                ("output_file_id", good, "output"),
                ("error_file_id", bad, "error"),
            ):
                if docs:
                    content = b"".join(orjson.dumps(d) + b"\n" for d in docs)
                    meta = self._new_file(
                        f"batch_{batch.id}_{kind}.jsonl",
                        "batch_output",
                        content,
                        batch.finalized_at or now,
                    )
                    batch.extra[key] = meta["id"]

    def _new_file(self, filename: str, purpose: str, content: bytes, now: float) -> dict[str, Any]:
        file_id = "file-" + random_alnum(22)
        meta = {
            "object": "file",
            "id": file_id,
            "purpose": purpose,
            "filename": filename,
            "bytes": len(content),
            "created_at": unix_s(now),
            "expires_at": unix_s(now + _FILE_TTL_S)
            if purpose in ("batch", "batch_output")
            else None,
            "status": "processed",
            "status_details": None,
        }
        with self.store.lock:
            self.store.files[file_id] = meta
            self.store.file_content[file_id] = content
        return meta

    # -- files ------------------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/files (multipart: file, purpose)."""
        gate = self._gate(request)
        if isinstance(gate, web.Response):
            return gate
        form = await request.post()
        purpose = form.get("purpose")
        upload = form.get("file")
        if not isinstance(purpose, str) or not purpose:
            return error_response(400, "Missing required parameter: 'purpose'.", param="purpose")
        if purpose not in _PURPOSES:
            return error_response(
                400, f"'{purpose}' is not one of {sorted(_PURPOSES)} - 'purpose'", param="purpose"
            )
        if not isinstance(upload, FileField):
            return error_response(400, "Missing required parameter: 'file'.", param="file")
        content = upload.file.read()
        if purpose == "batch" and len(content) > self.config.batch_max_bytes:
            return error_response(
                413,
                f"File of {len(content):,} bytes exceeds the {self.config.batch_max_bytes:,}-"
                "byte limit for purpose 'batch'.",
                param="file",
            )
        meta = self._new_file(upload.filename or "upload.jsonl", purpose, content, time.time())
        if gate == "drop":
            return _close(request)
        return _json(meta)

    def _file(self, request: web.Request) -> dict[str, Any] | web.Response:
        file_id = request.match_info["file_id"]
        meta = self.store.files.get(file_id)
        if meta is None:
            return error_response(404, f"No such File object: {file_id}", param="id")
        return meta

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/files/{id}."""
        gate = self._gate(request)
        if isinstance(gate, web.Response):
            return gate
        self._tick()
        meta = self._file(request)
        return meta if isinstance(meta, web.Response) else _json(meta)

    async def file_content(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/files/{id}/content: the raw bytes."""
        gate = self._gate(request)
        if isinstance(gate, web.Response):
            return gate
        self._tick()
        meta = self._file(request)
        if isinstance(meta, web.Response):
            return meta
        if gate == "drop":
            return _close(request)
        content = self.store.file_content[meta["id"]]
        return web.Response(body=content, content_type="application/octet-stream")

    async def list_files(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/files?purpose=&order=&limit=&after=."""
        gate = self._gate(request)
        if isinstance(gate, web.Response):
            return gate
        self._tick()
        query = request.query
        order = query.get("order", "desc")
        raw_limit = query.get("limit", "10000")
        if (
            order not in ("asc", "desc")
            or not raw_limit.isdigit()
            or not 1 <= int(raw_limit) <= 10_000
        ):
            return error_response(400, "Invalid query: order is asc or desc, limit 1 to 10000.")
        files = list(self.store.files.values())  # insertion order is creation order
        if "purpose" in query:
            files = [f for f in files if f["purpose"] == query["purpose"]]
        if order == "desc":
            files.reverse()
        if "after" in query:
            ids = [f["id"] for f in files]
            if query["after"] not in ids:
                return error_response(400, f"No such File object: {query['after']}", param="after")
            files = files[ids.index(query["after"]) + 1 :]
        limit = int(raw_limit)
        page = files[:limit]
        return _json(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(files) > limit,
            }
        )

    async def delete_file(self, request: web.Request) -> web.StreamResponse:
        """DELETE /v1/files/{id}."""
        gate = self._gate(request)
        if isinstance(gate, web.Response):
            return gate
        self._tick()
        meta = self._file(request)
        if isinstance(meta, web.Response):
            return meta
        with self.store.lock:
            self.store.files.pop(meta["id"], None)
            self.store.file_content.pop(meta["id"], None)
        return _json({"id": meta["id"], "object": "file", "deleted": True})

    # -- batches ----------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/batches: 200 `validating` with total 0; the input is checked later."""
        raw = await request.read()
        gate = self._gate(request, raw)
        if isinstance(gate, web.Response):
            return gate
        now = self._tick()
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            return error_response(400, "We could not parse the JSON body of your request.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(doc.get(name), str) or not doc[name]:
                return error_response(400, f"Missing required parameter: '{name}'.", param=name)
        endpoint = doc["endpoint"]
        if endpoint not in ENDPOINTS:
            return error_response(
                400,
                f"Invalid value for 'endpoint': '{endpoint}'.",
                param="endpoint",
                code="invalid_value",
            )
        if endpoint != "/v1/chat/completions":
            return error_response(
                400,
                f"The simulator runs only /v1/chat/completions batches, not {endpoint}.",
                param="endpoint",
            )
        if doc["completion_window"] != "24h":
            return error_response(
                400,
                "Invalid value for 'completion_window': only '24h' is supported.",
                param="completion_window",
                code="invalid_value",
            )
        metadata = doc.get("metadata")
        problem = _metadata_problem(metadata)
        if problem is not None:
            return error_response(400, problem, param="metadata")
        file_id = doc["input_file_id"]
        batch = self.store.new_batch(
            batch_id=_hex_id("batch_"),
            dialect="openai",
            endpoint=endpoint,
            model_id="",
            model=None,
            rows=[],
            validator=self._validator,
            now=now,
            extra={
                "input_file_id": file_id,
                "metadata": metadata,
                "max_requests": self.config.batch_max_requests,
            },
        )
        if gate == "drop" or self.store.take_lost_reply():
            return _close(request)
        return _json(batch_doc(batch))

    def _validator(self, batch: Batch) -> Rejection | None:
        file_id = batch.extra["input_file_id"]
        meta = self.store.files.get(file_id)
        content = self.store.file_content.get(file_id)
        problem = validate_file(batch, content, None if meta is None else meta["purpose"])
        if problem is not None:
            return problem
        limit = self.config.batch_enqueued_token_limit
        if limit is not None and batch.model is not None:
            queued = _enqueued_tokens(batch) + sum(
                _enqueued_tokens(b)
                for b in self.store.batches.values()
                if b is not batch
                and b.dialect == "openai"
                and b.status in ("in_progress", "finalizing")
                and b.model is not None
                and b.model.id == batch.model.id
            )
            if queued > limit:
                batch.rows = []
                return Rejection(
                    f"Enqueued token limit reached for {batch.model_id} in organization org-sim. "
                    f"Limit: {limit:,} enqueued tokens. Please try submitting fewer tasks, or wait "
                    "for some tasks to complete.",
                    code="token_limit_exceeded",
                )
        return None

    def _batch(self, request: web.Request, now: float) -> Batch | web.Response:
        batch_id = request.match_info["batch_id"]
        batch = self.store.find(batch_id, now, dialect="openai")
        if batch is None:
            return error_response(404, f"No batch found with id '{batch_id}'.")
        return batch

    async def get(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/batches/{id}."""
        gate = self._gate(request)
        if isinstance(gate, web.Response):
            return gate
        now = self._tick()
        found = self._batch(request, now)
        if isinstance(found, web.Response):
            return found
        if gate == "drop":
            return _close(request)
        return _json(batch_doc(found))

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/batches/{id}/cancel: `cancelling`, then `cancelled` with partial results."""
        gate = self._gate(request)
        if isinstance(gate, web.Response):
            return gate
        now = self._tick()
        found = self._batch(request, now)
        if isinstance(found, web.Response):
            return found
        if found.terminal:
            return error_response(400, f"Cannot cancel a batch with status '{found.status}'.")
        self.store.cancel(found, now)
        self._tick()
        return _json(batch_doc(found))

    async def list(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/batches?after=&limit=: newest first."""
        gate = self._gate(request)
        if isinstance(gate, web.Response):
            return gate
        now = self._tick()
        raw_limit = request.query.get("limit", "20")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
            return error_response(
                400, "Invalid 'limit': expected an integer from 1 to 100.", param="limit"
            )
        items = self.store.listed(now, dialect="openai")
        if "after" in request.query:
            ids = [b.id for b in items]
            if request.query["after"] not in ids:
                return error_response(
                    400, f"No batch found with id '{request.query['after']}'.", param="after"
                )
            items = items[ids.index(request.query["after"]) + 1 :]
        limit = int(raw_limit)
        page = items[:limit]
        return _json(
            {
                "object": "list",
                "data": [batch_doc(b) for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(items) > limit,
            }
        )


def _metadata_problem(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return "Invalid type for 'metadata': expected an object."
    if len(metadata) > 16:
        return "Invalid 'metadata': at most 16 key-value pairs."
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            return "Invalid 'metadata': keys up to 64 characters, string values up to 512."
    return None
