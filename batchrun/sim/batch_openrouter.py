"""OpenRouter's Batch API (batch-wire Part A): create, get, list, results and delete; no cancel."""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from .batch_store import (
    TERMINAL,
    Batch,
    BatchStore,
    Rejection,
    Row,
    RowResult,
    estimate_usd,
    random_alnum,
    unix_s,
    with_provider,
)
from .bodies import completion_doc
from .catalog import BATCH_SUFFIX, CATALOG, Model, batch_variant
from .config import SimConfig
from .received import ReceivedLog
from .replies import canonical_messages, prompt_tokens, usage_json
from .routing import provider_slug
from .wire import format_retry_after

__all__ = ["ENDPOINTS", "OpenRouterBatches", "line_problem", "second_stage"]

_JSON = "application/json"
ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/embeddings")
_ORDER_ERROR = "endpoint and model are required and must appear before requests in the request body"
_ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})
_LIST_STATUSES = frozenset(
    {"validating", "in_progress", "completed", "failed", "expired", "cancelled"}
)
_MEDIA_PARTS = frozenset({"input_audio", "file", "video_url", "input_video", "audio", "input_file"})
_BIG_BODY = 1 << 20  # bodies above this are not kept in the received-request log
_RESULTS_PAGE = 100
_ROW_ERRORS = {
    "429": {
        "type": "rate_limit_error",
        "message": "Provider returned 429: the upstream rate limit was exceeded; retry later.",
        "param": None,
        "error_type": "rate_limit_exceeded",
    },
    "500": {
        "type": "server_error",
        "message": "Provider returned error: internal server error.",
        "param": None,
        "error_type": "server",
    },
    "timeout": {
        "type": "timeout_error",
        "message": "The provider did not answer this request in time.",
        "param": None,
        "error_type": "timeout",
    },
}


class _Refused(Exception):
    """A synchronous check of the create failed: answer with this status and message."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """OpenRouter's batch error envelope (live bodies put `message` before `code`)."""
    body = orjson.dumps({"error": {"message": message, "code": status}})
    return web.Response(status=status, body=body, content_type=_JSON, headers=headers)


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type=_JSON)


def _close(request: web.Request) -> web.Response:
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=200)


# -- the second stage (after the 202): what fails a whole batch -------------------------------


def line_problem(cid: str, body: Mapping[str, Any], model: Model) -> str | None:
    """Return why OpenRouter's async line policy fails a batch on this request, or None."""
    if body.get("stream") is True:
        return (
            f"Batch request '{cid}' sets stream: true. Batch requests do not support stream: true."
        )
    for key in ("max_tokens", "max_completion_tokens"):
        cap = body.get(key)
        if isinstance(cap, (int, float)) and not isinstance(cap, bool) and cap < 1:
            return (
                f"Batch request '{cid}' sets '{key}' below 1; each batched request must allow "
                "at least 1 output token."
            )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return f"Batch request '{cid}' has no messages; a chat request needs at least one message."
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            return f"Batch request '{cid}' has an invalid message at messages[{i}]."
        content = m.get("content")
        if isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "image_url" and not _public_url(part.get("image_url")):
                    return _unsupported(cid, "image_url")
                if kind in _MEDIA_PARTS:
                    return _unsupported(cid, str(kind))
    modalities = body.get("modalities")
    if (isinstance(modalities, list) and any(m != "text" for m in modalities)) or any(
        k in body for k in ("audio", "image_config")
    ):
        return f"Batch request '{cid}' asks for non-text output; batch output is text only."
    cap = body.get("max_completion_tokens", body.get("max_tokens"))
    cap = cap if isinstance(cap, int) and not isinstance(cap, bool) else 0
    wanted = prompt_tokens(messages, body.get("tools")) + cap
    if wanted > model.context_length:
        return (
            f"Batch request '{cid}' is too long: this endpoint's maximum context length is "
            f"{model.context_length} tokens, and it requests about {wanted}."
        )
    return None


def _public_url(image: Any) -> bool:
    url = image.get("url") if isinstance(image, dict) else image
    return isinstance(url, str) and url.startswith(("http://", "https://"))


def _unsupported(cid: str, kind: str) -> str:
    return (
        f"Batch request '{cid}' contains unsupported '{kind}' content. Only public http(s) image "
        "URLs are supported in batch; base64/data-URI images, audio, video, and file content "
        "parts are rejected."
    )


def second_stage(batch: Batch) -> Rejection | None:
    """Check every line as the submit worker does; the first bad one fails the batch."""
    model = batch.model
    assert model is not None
    first_format: bytes | None = None
    for row in batch.rows:
        problem = line_problem(row.custom_id, row.body, model)
        if problem is None and model.tokenizer == "Gemini":
            # Google batches take one response_format for every request (batch-wire A3.6).
            fmt = canonical_messages([row.body.get("response_format")])
            if first_format is None:
                first_format = fmt
            elif fmt != first_format:
                problem = (
                    f"Batch request '{row.custom_id}' uses a different response_format from the "
                    "first request; every request of a Google batch must use the same one."
                )
        if problem is not None:
            return Rejection(problem, line=row.line)
    return None


# -- rendering ----------------------------------------------------------------------------------


def _row_id(batch: Batch, custom_id: str, prefix: str) -> str:
    return prefix + hashlib.sha256(f"{batch.id}\0{custom_id}".encode()).hexdigest()[:24]


def result_doc(batch: Batch, r: RowResult) -> dict[str, Any]:
    """One result line: exactly one of `response` and `error` is set (a 4xx keeps `response`)."""
    cid = r.row.custom_id
    doc: dict[str, Any] = {"id": _row_id(batch, cid, "batch_req_"), "custom_id": cid}
    request_id = _row_id(batch, cid, "req_")
    if r.kind == "400":
        error = {
            "message": "This request was rejected by the provider: invalid_request_error.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "invalid_request_error",
        }
        doc["response"] = {"status_code": 400, "request_id": request_id, "body": {"error": error}}
        doc["error"] = None
        return doc
    if not r.ok or r.reply is None:
        doc["response"] = None
        doc["error"] = dict(_ROW_ERRORS.get(r.kind, _ROW_ERRORS["500"]))
        return doc
    assert batch.model is not None
    model = batch_variant(batch.model)
    usage = usage_json(r.reply, model, "openrouter")
    # Billing stays out of public results: the batch's usage.cost is the charge (batch-wire A6.2).
    for key in ("cost", "cost_details", "is_byok"):
        usage.pop(key, None)
    body = completion_doc(r.gen_id, int(r.t), model, r.reply, usage, "openrouter")
    doc["response"] = {"status_code": 200, "request_id": request_id, "body": body}
    doc["error"] = None
    return doc


def batch_doc(batch: Batch, *, results: bool) -> dict[str, Any]:
    """The BatchObject; inline `results` only on a finished GET (list items always null)."""
    counts = batch.counts()
    status = batch.status
    if status in ("finalizing", "cancelling"):
        status = "in_progress"  # stored jobs collapse these phases (batch-wire A4.2)
    error: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    if status == "failed":
        counts = {"total": counts["total"], "completed": 0, "failed": counts["total"]}
        error = {"message": batch.error.message if batch.error else "Batch failed."}
    elif batch.terminal:
        prompt, completion, cached, reasoning = batch.usage_tokens()
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cost": batch.cost,
            "is_byok": False,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
        ran = [r for r in batch.results if r.ran]
        if status == "completed" and ran and not any(r.ok for r in ran):
            error = {
                "message": f"All {len(ran)} request(s) in this batch failed upstream; inspect "
                "each result's error field."
            }
        if status == "expired":
            counts = {
                "total": counts["total"],
                "completed": counts["completed"],
                "failed": sum(1 for r in ran if not r.ok),
            }
    doc: dict[str, Any] = {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "model": batch.model_id,
        "completion_window": "24h",
        "status": status,
        "created_at": unix_s(batch.created),
        "finalized_at": None if batch.finalized_at is None else unix_s(batch.finalized_at),
        "expires_at": unix_s(batch.expires_at),
        "provider": batch.model.provider if batch.model is not None else None,
        "request_counts": counts,
        "usage": usage,
        "results": None,
        "error": error,
    }
    if results and batch.terminal and status != "failed":
        doc["results"] = [result_doc(batch, r) for r in batch.ordered_results()]
    return doc


def _cursor(batch_id: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{batch_id}:{offset}".encode()).decode().rstrip("=")


def _offset(cursor: str, batch_id: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    version, _, rest = text.partition(":")
    cid, _, offset = rest.rpartition(":")
    if version != "v1" or cid != batch_id or not offset.isdigit():
        return None
    return int(offset)


def _timestamp(value: str) -> float | None:
    if value.isdigit():
        return float(value)
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# -- the handlers -------------------------------------------------------------------------------


class OpenRouterBatches:
    """The aiohttp handlers of OpenRouter's batch routes over a BatchStore."""

    def __init__(self, config: SimConfig, store: BatchStore, received: ReceivedLog) -> None:
        self.config = config
        self.store = store
        self.received = received

    def _gate(self, request: web.Request, body: bytes | None = None) -> web.Response | str | None:
        """Log the request, check auth, then an injected route fault: a response to send, "drop",
        or None to go on."""
        self.received.add(request, body)
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not token:
            return error_response(401, "No auth credentials found.")
        keys = self.config.api_keys
        if keys is not None and token not in keys:
            return error_response(401, "User not found.")
        fault = self.store.route_fault(request.headers.get("X-Sim-Fault"))
        if fault == "429":
            retry = {"Retry-After": format_retry_after(self.config.retry_after_s)}
            return error_response(
                429, "Batch API rate limit exceeded for the billable entity.", retry
            )
        if fault == "500":
            return error_response(500, "Internal server error.")
        return fault

    def _open_batch(self, request: web.Request) -> tuple[Batch, str | None] | web.Response:
        """The gate, then the batch the path names, as it stands now (404 while it is invisible)."""
        gate = self._gate(request)
        if isinstance(gate, web.Response):
            return gate
        now = time.time()
        self.store.advance(now)
        found = self._visible(request, now)
        return found if isinstance(found, web.Response) else (found, gate)

    def _visible(self, request: web.Request, now: float) -> Batch | web.Response:
        batch_id = request.match_info["batch_id"]
        batch = self.store.find(batch_id, now, dialect="openrouter")
        if batch is None:
            return error_response(404, f"Batch job {batch_id} not found.")
        return batch

    def _payment_required(self, batch: Batch) -> web.Response:
        doc = batch_doc(batch, results=False)
        left = self.store.remaining_usd() or 0.0
        doc["error"] = {
            "code": 402,
            "message": f"The finalized batch cost (${batch.cost:.6f}) exceeds the available "
            f"balance (${max(0.0, left):.6f}). Top up credits and poll again to receive the "
            "persisted results.",
        }
        return _json(doc, 402)

    async def create(self, request: web.Request) -> web.StreamResponse:
        """POST /batches: the synchronous gates, then 202 `validating`."""
        raw = await request.read()
        gate = self._gate(request, raw if len(raw) <= _BIG_BODY else None)
        if isinstance(gate, web.Response):
            return gate
        now = time.time()
        self.store.advance(now)
        try:
            batch = self._accept(raw, now)
        except _Refused as exc:
            return error_response(exc.status, exc.message)
        if gate == "drop" or self.store.take_lost_reply():
            return _close(request)  # persisted, but the client never hears of it
        return _json(batch_doc(batch, results=False), 202)

    def _accept(self, raw: bytes, now: float) -> Batch:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _Refused(400, "Request body must be valid JSON.") from None
        if not isinstance(doc, dict):
            raise _Refused(400, "Request body must be a JSON object.")
        # The ingest stream-parses: the envelope is what comes before `requests` (dicts keep the
        # document's key order).
        keys = list(doc)
        cut = keys.index("requests") if "requests" in keys else len(keys)
        envelope = {k: doc[k] for k in keys[:cut]}
        if "endpoint" not in envelope or "model" not in envelope:
            raise _Refused(400, _ORDER_ERROR)
        endpoint, model_id = envelope["endpoint"], envelope["model"]
        if endpoint not in ENDPOINTS:
            raise _Refused(400, f"endpoint must be one of {', '.join(ENDPOINTS)}.")
        if endpoint != "/v1/chat/completions":
            raise _Refused(
                400, f"The simulator serves only /v1/chat/completions batches, not {endpoint}."
            )
        if not isinstance(model_id, str) or not model_id:
            raise _Refused(400, "model must be a non-empty string.")
        window = envelope.get("completion_window", "24h")
        if window != "24h":
            raise _Refused(400, "completion_window must be '24h'.")
        model = self._batch_model(model_id, envelope.get("provider"))
        requests = doc.get("requests")
        if not isinstance(requests, list) or not requests:
            raise _Refused(400, "requests must be a non-empty array.")
        cap = self.config.batch_max_requests or 5_000
        if len(requests) > cap:
            raise _Refused(
                413, f"A batch holds at most {cap:,} requests; this one has {len(requests):,}."
            )
        if len(raw) > self.config.batch_max_bytes:
            raise _Refused(
                413,
                f"Batch payload of {len(raw):,} bytes exceeds the "
                f"{self.config.batch_max_bytes:,}-byte limit.",
            )
        rows = self._rows(requests, model_id)
        left = self.store.remaining_usd()
        estimate = estimate_usd(model, rows)
        if left is not None and estimate > left:
            raise _Refused(
                402,
                f"Insufficient credits: this batch's estimated cost (${estimate:.6f}) exceeds your "
                f"balance (${max(0.0, left):.6f}). Add credits at "
                "https://openrouter.ai/settings/credits",
            )
        return self.store.new_batch(
            batch_id=f"batch-{int(now)}-{random_alnum(20)}",
            dialect="openrouter",
            endpoint=endpoint,
            model_id=model_id,
            model=model,
            rows=rows,
            validator=second_stage,
            now=now,
        )

    def _batch_model(self, model_id: str, preferences: Any) -> Model:
        if model_id.endswith(":online"):
            raise _Refused(
                422,
                f"Model '{model_id}' is not supported in batch: web search (:online) is sync-only.",
            )
        base = model_id.removesuffix(BATCH_SUFFIX)
        model = CATALOG.get(base)
        if model is None or model.retired or not model.batch_providers:
            raise _Refused(400, f"Model '{model_id}' does not have a :batch endpoint.")
        only = preferences.get("only") if isinstance(preferences, dict) else None
        providers = list(model.batch_providers)
        if isinstance(only, list) and only:
            wanted = {str(o).lower() for o in only}
            providers = [p for p in providers if p.lower() in wanted or provider_slug(p) in wanted]
            if not providers:
                raise _Refused(
                    404,
                    f"Model '{model_id}' does not have an eligible :batch endpoint matching "
                    f"provider.only: {', '.join(map(str, only))}.",
                )
        return with_provider(model, providers[0])

    def _rows(self, requests: list[Any], model_id: str) -> list[Row]:
        rows: list[Row] = []
        seen: set[str] = set()
        base = model_id.removesuffix(BATCH_SUFFIX)
        for i, item in enumerate(requests):
            if not isinstance(item, dict):
                raise _Refused(400, f"requests[{i}] must be an object with custom_id and body.")
            if "custom_id" not in item:
                raise _Refused(400, f"custom_id is required on requests[{i}].")
            cid = item["custom_id"]
            if not isinstance(cid, str) or not cid:
                raise _Refused(400, f"custom_id: Invalid input: expected string (requests[{i}]).")
            if cid in seen:
                raise _Refused(422, f"Request at line {i + 1} has a duplicate custom_id '{cid}'")
            seen.add(cid)
            body = item.get("body")
            if not isinstance(body, dict):
                raise _Refused(400, f"body is required on requests[{i}] and must be an object.")
            if "model" in body and body["model"] not in (model_id, base, base + BATCH_SUFFIX):
                raise _Refused(
                    400,
                    f"requests[{i}].body.model '{body['model']}' does not match the batch-level "
                    f"model '{model_id}'.",
                )
            rows.append(Row(i, i + 1, cid, body))
        return rows

    async def get(self, request: web.Request) -> web.StreamResponse:
        """GET /batches/{id}: the stored state; 402 while the finished batch is unpaid."""
        opened = self._open_batch(request)
        if isinstance(opened, web.Response):
            return opened
        found, gate = opened
        if gate == "drop":
            return _close(request)
        if found.terminal and not found.paid:
            return self._payment_required(found)
        return _json(batch_doc(found, results=True))

    async def results(self, request: web.Request) -> web.StreamResponse:
        """GET /batches/{id}/results?limit=&cursor=: one stable page of a finished batch."""
        opened = self._open_batch(request)
        if isinstance(opened, web.Response):
            return opened
        found, gate = opened
        raw_limit = request.query.get("limit", str(_RESULTS_PAGE))
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
            return error_response(400, "limit must be an integer from 1 through 1000.")
        limit = int(raw_limit)
        offset = 0
        if "cursor" in request.query:
            decoded = _offset(request.query["cursor"], found.id)
            if decoded is None:
                return error_response(400, "Invalid cursor.")
            offset = decoded
        if not found.terminal:
            return error_response(
                409, f"Batch {found.id} has not finished; its results are served once it has."
            )
        if not found.paid:
            return self._payment_required(found)
        if gate == "drop":
            return _close(request)
        rows = [] if found.status == "failed" else found.ordered_results()
        page = rows[offset : offset + limit]
        more = offset + limit < len(rows)
        return _json(
            {
                "object": "list",
                "data": [result_doc(found, r) for r in page],
                "has_more": more,
                "next_cursor": _cursor(found.id, offset + limit) if more else None,
            }
        )

    async def list(self, request: web.Request) -> web.StreamResponse:
        """GET /batches: newest first, `after` paging, filters; cached per query string."""
        gate = self._gate(request)
        if isinstance(gate, web.Response):
            return gate
        now = time.time()
        self.store.advance(now)
        key = hashlib.sha256(
            request.headers.get("Authorization", "").encode()
            + b"\0"
            + request.query_string.encode()
        ).hexdigest()
        cached = self.store.list_cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            body = cached[1]
        else:
            try:
                body = orjson.dumps(self._list_page(request, now))
            except _Refused as exc:
                return error_response(exc.status, exc.message)
            if self.config.batch_list_cache_s > 0:
                self.store.list_cache[key] = (
                    time.monotonic() + self.config.batch_list_cache_s,
                    body,
                )
        if gate == "drop":
            return _close(request)
        return web.Response(body=body, content_type=_JSON, headers={"Cache-Control": "private"})

    def _list_page(self, request: web.Request, now: float) -> dict[str, Any]:
        query = request.query
        bad = _Refused(400, "Invalid batch list query.")
        raw_limit = query.get("limit", "20")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
            raise bad
        statuses = set(query.getall("status", []))
        if not statuses <= _LIST_STATUSES:
            raise bad
        bounds: dict[str, float] = {}
        for name in ("created_after", "created_before"):
            if name in query:
                value = _timestamp(query[name])
                if value is None:
                    raise bad
                bounds[name] = value
        if bounds.get("created_after", float("-inf")) >= bounds.get("created_before", float("inf")):
            raise bad
        items = [
            b
            for b in self.store.listed(now, dialect="openrouter")
            if (not statuses or _list_status(b) in statuses)
            and b.created > bounds.get("created_after", float("-inf"))
            and b.created < bounds.get("created_before", float("inf"))
        ]
        if "after" in query:
            anchor = self.store.batches.get(query["after"])
            if anchor is None:
                raise bad
            items = [b for b in items if (b.created, b.seq) < (anchor.created, anchor.seq)]
        limit = int(raw_limit)
        page = items[:limit]
        return {
            "object": "list",
            "data": [batch_doc(b, results=False) for b in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(items) > limit,
        }

    async def delete(self, request: web.Request) -> web.StreamResponse:
        """DELETE /batches/{id}: only a finished batch; GET and list answer 404 after."""
        opened = self._open_batch(request)
        if isinstance(opened, web.Response):
            return opened
        found, gate = opened
        if found.status not in TERMINAL:
            return error_response(
                409,
                "Only completed, failed, expired, or cancelled batches can be deleted. Wait for "
                "the batch to finish and try again.",
            )
        if not found.paid:
            # "completed rows whose results are not yet materialized return 409" (batch-wire A8).
            return error_response(
                409,
                "This batch's results are withheld until its cost is paid; add credits and "
                "try again.",
            )
        self.store.delete(found)
        if gate == "drop":
            return _close(request)
        deletion: dict[str, Any] = {"openrouter": "deleted"}
        if found.model is not None:
            upstream = "not_applicable" if found.status == "failed" else "unsupported"
            deletion["upstream"] = {"provider": found.model.provider, "status": upstream}
        return _json({"id": found.id, "object": "batch", "deletion": deletion})

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        """POST /batches/{id}/cancel: OpenRouter has no such route."""
        self.received.add(request)
        return web.Response(status=404, text="Not Found", content_type="text/plain")


def _list_status(batch: Batch) -> str:
    return "in_progress" if batch.status in ("finalizing", "cancelling") else batch.status

