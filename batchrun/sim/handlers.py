"""Request handlers: auth, validation, rate limits, fault injection, replies and billing."""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import orjson
from aiohttp import web

from .bodies import (
    chunk_doc,
    completion_doc,
    error_chunk_doc,
    new_gen_id,
    split_pieces,
    usage_chunk_doc,
)
from .catalog import CATALOG, DEFAULT_MODEL, Model, models_payload, openai_models_payload
from .config import SimConfig
from .faults import FaultPicker, find_marker
from .ledger import Entry, Ledger
from .limits import RateDecision, RateWindow
from .prompt_cache import PromptCache
from .replies import (
    Reply,
    cost_parts,
    make_reply,
    message_text,
    prompt_key,
    prompt_tokens,
    usage_json,
)
from .routing import provider_slug, route
from .wire import (
    ErrorReply,
    UpstreamHeaderStyles,
    credits_reply,
    error_reply,
    fault_reply,
    format_retry_after,
    go_duration,
)

__all__ = ["SimHandlers"]

_JSON = "application/json"
_ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})
_HEARTBEAT = b"\n\n   \n"
_PROCESSING = b": OPENROUTER PROCESSING\n\n"
# Faults that happen once generation started: the status is already committed (wire §1).
_IN_GENERATION = frozenset(
    {"error200", "finish_error", "empty_choices", "whitespace", "drop", "torn", "hang"}
)
_UNBILLED = frozenset({"error200", "finish_error", "empty_choices"})
_STREAM_ERROR = {
    "code": 502,
    "message": "Provider returned error",
    "metadata": {"error_type": "provider_error", "provider_name": None},
}


def _sse(doc: Mapping[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


class _Rejected(Exception):
    """Raised inside request parsing to answer with an error before generation."""

    def __init__(self, reply: ErrorReply) -> None:
        self.reply = reply


class SimHandlers:
    """All simulator state and the aiohttp handlers that read and change it."""

    def __init__(self, config: SimConfig, ledger: Ledger | None = None) -> None:
        self.config = config
        self.ledger = ledger if ledger is not None else Ledger()
        self.window = RateWindow(config.rpm, config.tpm, config.rate_window_s)
        self.picker = FaultPicker(config.faults, config.seed)
        self.upstream_styles = UpstreamHeaderStyles(config.upstream_429_headers)
        self._latency_rng = random.Random(config.seed + 1)
        self._dialect = config.dialect
        self.received = self.ledger.received
        self.prompt_cache = PromptCache()

    # -- shared helpers ---------------------------------------------------------------------

    def _usage(self, reply: Reply, model: Model, *, billed: bool = True) -> dict[str, Any]:
        return usage_json(
            reply, model, self._dialect, billed=billed, report_cost=self.config.report_cost
        )

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra) if extra else {}
        if self._dialect == "openai":
            headers.update(self._openai_rate_headers())
        return headers

    def _openai_rate_headers(self) -> dict[str, str]:
        req_left, tok_left, req_reset, tok_reset = self.window.remaining(time.monotonic())
        scale = 60.0 / self.config.rate_window_s
        req_limit = int(self.config.rpm) if self.config.rpm else 10_000
        tok_limit = int(self.config.tpm) if self.config.tpm else 10_000_000
        return {
            "x-ratelimit-limit-requests": str(req_limit),
            "x-ratelimit-remaining-requests": str(
                req_limit if req_left is None else min(req_limit, int(req_left * scale))
            ),
            "x-ratelimit-reset-requests": go_duration(req_reset),
            "x-ratelimit-limit-tokens": str(tok_limit),
            "x-ratelimit-remaining-tokens": str(
                tok_limit if tok_left is None else min(tok_limit, int(tok_left * scale))
            ),
            "x-ratelimit-reset-tokens": go_duration(tok_reset),
        }

    def _answer(self, reply: ErrorReply) -> web.Response:
        return web.Response(
            status=reply.status,
            body=reply.body,
            content_type=reply.content_type,
            headers=self._headers(reply.headers),
        )

    def _reject(self, reply: ErrorReply, *, rate_limited: bool = False) -> web.Response:
        self.ledger.reject(reply.status, rate_limited=rate_limited)
        return self._answer(reply)

    def _json(self, doc: Any, status: int = 200) -> web.Response:
        return web.Response(
            status=status, body=orjson.dumps(doc), content_type=_JSON, headers=self._headers()
        )

    def _check_auth(self, request: web.Request) -> None:
        if self._dialect == "plain":
            return
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not token:
            raise _Rejected(error_reply(self._dialect, 401, "No auth credentials found"))
        keys = self.config.api_keys
        if keys is not None and token not in keys:
            raise _Rejected(error_reply(self._dialect, 401, "User not found."))

    async def _delay(self) -> None:
        cfg = self.config
        wait = cfg.latency_s
        if cfg.latency_jitter_s:
            wait += self._latency_rng.uniform(0.0, cfg.latency_jitter_s)
        if wait > 0:
            await asyncio.sleep(wait)

    # -- request parsing --------------------------------------------------------------------

    def _bad(self, message: str) -> _Rejected:
        return _Rejected(error_reply(self._dialect, 400, message))

    def _parse(self, raw: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise self._bad("Invalid JSON in request body") from None
        if not isinstance(body, dict):
            raise self._bad("Request body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise self._bad('"messages" must be a non-empty array of {role, content} objects')
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in _ROLES:
                raise self._bad(f"messages[{i}] must be an object with a valid role")
            content = m.get("content")
            if not (isinstance(content, (str, list)) or (content is None and m.get("tool_calls"))):
                raise self._bad(f"messages[{i}].content must be a string or an array of parts")
        for key in ("max_tokens", "max_completion_tokens"):
            cap = body.get(key)
            if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
                raise self._bad(f'"{key}" must be a positive integer')
        if self._dialect == "openai" and (unknown := sorted(set(body) - OPENAI_CHAT_PARAMS)):
            # OpenAI refuses what it does not know (OpenRouter's models, provider, ...); OpenRouter,
            # vLLM, llama.cpp and Ollama ignore it.
            raise self._bad(f"Unrecognized request argument supplied: {unknown[0]}")
        return body, messages

    def _unavailable(self, model_id: str, model: Model | None) -> _Rejected:
        if model is None:
            availability = {
                "code": "model_not_found",
                "retryable": False,
                "fallback_models": [DEFAULT_MODEL],
            }
            return _Rejected(
                error_reply(
                    self._dialect,
                    400,
                    f"{model_id} is not a valid model ID",
                    {"availability": availability},
                    openai_code="model_not_found",
                    extra={"availability": availability},
                )
            )
        availability = {
            "code": "model_deprecated",
            "retryable": False,
            "fallback_models": list(model.fallback_models),
        }
        return _Rejected(
            error_reply(
                self._dialect,
                404,
                f"No endpoints found for {model_id}.",
                {"availability": availability},
                extra={"availability": availability},
            )
        )

    def _no_provider(self, model: Model, preferences: Any) -> _Rejected:
        # [obs] OpenRouter's body when provider preferences leave no endpoint (agent-zero#1255);
        # requested_providers is sent when the request named providers to use.
        prefs = preferences if isinstance(preferences, Mapping) else {}
        requested = prefs.get("only") or prefs.get("order")
        meta: dict[str, Any] = {"available_providers": [provider_slug(p) for p in model.providers]}
        if isinstance(requested, list):
            meta["requested_providers"] = requested
        return _Rejected(
            error_reply(
                self._dialect, 404, "No allowed providers are available for the selected model.", meta
            )
        )

    def _served(self, model: Model, preferences: Any) -> Model | None:
        if self._dialect != "openrouter":
            return model  # other servers have no providers to choose from
        providers = route(model, preferences)
        return replace(model, provider=providers[0]) if providers else None

    def _resolve_model(self, body: Mapping[str, Any]) -> Model:
        candidates: list[str] = []
        if isinstance(body.get("model"), str) and body["model"]:
            candidates.append(body["model"])
        fallbacks = body.get("models")
        if isinstance(fallbacks, list):
            candidates.extend(m for m in fallbacks if isinstance(m, str) and m)
        if not candidates:
            candidates.append(DEFAULT_MODEL)
        if self._dialect == "plain" and candidates[0] not in CATALOG:
            # llama.cpp's server runs the one model it loaded, whatever name a request gives,
            # and echoes that name back.
            return replace(CATALOG[DEFAULT_MODEL], id=candidates[0])
        preferences = body.get("provider")
        first_error: _Rejected | None = None
        # Any failure moves on to the next model of the fallback list (wire §5); the first
        # model's failure is the one reported when none is left.
        for model_id in candidates:
            model = CATALOG.get(model_id)
            if model is None or model.retired:
                first_error = first_error or self._unavailable(model_id, model)
                continue
            served = self._served(model, preferences)
            if served is not None:
                return served
            first_error = first_error or self._no_provider(model, preferences)
        assert first_error is not None
        raise first_error

    def _check_context(self, model: Model, n_prompt: int, cap: int | None) -> None:
        wanted = n_prompt + (cap or 0)
        if wanted > model.context_length:
            raise self._bad(
                f"This endpoint's maximum context length is {model.context_length} tokens. "
                f"However, you requested about {wanted} tokens ({n_prompt} of text input, "
                f"{cap or 0} in the output). Please reduce the length of either one, or use the "
                '"middle-out" transform to compress your prompt automatically.'
            )

    def _check_credits(self, model: Model, n_prompt: int, cap: int | None) -> None:
        cfg = self.config
        used = self.ledger.billed_total_usd()
        if cfg.key_limit_usd is not None and used >= cfg.key_limit_usd:
            raise _Rejected(
                credits_reply(
                    self._dialect,
                    "Key limit exceeded (total limit). Manage it using "
                    "https://openrouter.ai/settings/keys",
                    source="openrouter_key_limit",
                )
            )
        if cfg.credits_usd is None:
            return
        left = cfg.credits_usd - used
        if left <= 0:
            raise _Rejected(credits_reply(self._dialect))
        worst_out = cap or model.max_completion_tokens or 4096
        worst = n_prompt * model.prompt_price + worst_out * model.completion_price
        if model.completion_price > 0 and worst > left:
            afford = max(
                0, math.floor((left - n_prompt * model.prompt_price) / model.completion_price)
            )
            raise _Rejected(
                credits_reply(
                    self._dialect,
                    "This request requires more credits, or fewer max_tokens. You requested up to "
                    f"{worst_out} tokens, but can only afford {afford}. To increase, visit "
                    "https://openrouter.ai/settings/credits and upgrade to a paid account",
                )
            )

    def _rate_limited(self, model: Model, decision: RateDecision) -> web.Response:
        wait = max(0.001, decision.wait_s)
        reset_ms = str(math.ceil((time.time() + wait) * 1000))
        rl = {
            "X-RateLimit-Limit": str(decision.limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": reset_ms,
        }
        headers = dict(rl)
        if self.config.rate_retry_after:
            headers["Retry-After"] = format_retry_after(wait)
        which = "limit_rpm" if decision.kind == "requests" else "limit_tpm"
        window = format_retry_after(self.config.rate_window_s)
        msg = f"Rate limit exceeded: {which}/{model.id}/{window}s"
        if self._dialect == "openai":
            unit = "RPM" if decision.kind == "requests" else "TPM"
            msg = (
                f"Rate limit reached for {model.id} ({unit}): Limit {decision.limit}, Used "
                f"{decision.limit}. Please try again in {go_duration(wait)}."
            )
        reply = error_reply(
            self._dialect,
            429,
            msg,
            {"headers": rl},
            headers=headers,
            openai_type=decision.kind,
        )
        return self._reject(reply, rate_limited=True)

    # -- endpoints --------------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """POST chat/completions."""
        raw = await request.read()
        self.received.add(request, raw)
        try:
            self._check_auth(request)
            body, messages = self._parse(raw)
            model = self._resolve_model(body)
            tools = body.get("tools")
            n_prompt = prompt_tokens(messages, tools)
            cap = body.get("max_completion_tokens", body.get("max_tokens"))
            self._check_context(model, n_prompt, cap)
            self._check_credits(model, n_prompt, cap)
        except _Rejected as exc:
            return self._reject(exc.reply)

        texts = [message_text(m) for m in messages]
        reply = make_reply(body, messages, model, n_prompt)
        cached = self.prompt_cache.cached_tokens(model.id, messages, reply.prompt_tokens)
        if cached:
            reply = replace(reply, cached_tokens=cached)
        now = time.monotonic()
        decision = self.window.admit(now, reply.prompt_tokens + reply.completion_tokens)
        if not decision.allowed:
            return self._rate_limited(model, decision)
        self.ledger.accept(now)

        marker = find_marker(texts)
        body_key = ""
        if marker is not None and marker[1] is not None:
            body_key = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        fault = self.picker.choose(request.headers.get("X-Sim-Fault"), marker, body_key)
        if fault is not None:
            self.ledger.fault(fault)

        if fault is not None and fault not in _IN_GENERATION:
            await self._delay()
            flagged = next((t for t in reversed(texts) if t), "")
            style = self.upstream_styles.next() if fault == "429" else "retry-after"
            answer = fault_reply(
                fault, self._dialect, model, self.config.retry_after_s, flagged, header_style=style
            )
            if answer is not None:
                return self._reject(answer)

        streamed = body.get("stream") is True
        gen_id = new_gen_id(time.time())
        outcome = fault or "ok"
        billed = outcome not in _UNBILLED
        pkey = prompt_key(messages)
        # Billed before the latency: a client that gives up while the model "runs" still pays,
        # as Google does for disconnects (wire §4).
        self._bill(gen_id, model, reply, outcome, billed, pkey, streamed)
        if streamed:
            # OpenRouter always ends a stream with usage; OpenAI and vLLM only when asked.
            options = body.get("stream_options")
            with_usage = self._dialect == "openrouter" or (
                isinstance(options, dict) and options.get("include_usage") is True
            )
            return await self._stream(request, gen_id, model, reply, fault, with_usage)
        return await self._complete(request, gen_id, model, reply, fault)

    def _bill(
        self,
        gen_id: str,
        model: Model,
        reply: Reply,
        outcome: str,
        billed: bool,
        pkey: str,
        streamed: bool,
    ) -> None:
        completion = reply.completion_tokens
        if outcome == "finish_error":
            completion = _partial_tokens(reply)
        elif outcome in ("empty_choices", "error200"):
            completion = 0
        pc, cc = cost_parts(model, reply.prompt_tokens, completion, reply.cached_tokens)
        self.ledger.add(
            Entry(
                gen_id=gen_id,
                model=model.id,
                provider=model.provider,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=completion,
                reasoning_tokens=reply.reasoning_tokens,
                cached_tokens=reply.cached_tokens,
                cost=pc + cc,
                billed=billed,
                outcome=outcome,
                prompt_key=pkey,
                t=time.monotonic(),
                streamed=streamed,
                finish_reason="error" if outcome == "finish_error" else reply.finish_reason,
            )
        )

    async def _complete(
        self, request: web.Request, gen_id: str, model: Model, reply: Reply, fault: str | None
    ) -> web.StreamResponse:
        created = int(time.time())
        dialect = self._dialect
        headers = self._headers({"X-Generation-Id": gen_id})
        if fault != "whitespace":
            await self._delay()
        if fault == "error200":
            meta = {
                "raw": '{"error":{"code":502,"message":"upstream closed"}}',
                "provider_name": model.provider,
            }
            err = error_reply(dialect, 502, "Provider returned error", meta)
            return web.Response(body=err.body, content_type=_JSON, headers=headers)
        if fault == "drop":
            _close(request)
            return web.Response(status=200)
        if fault == "hang":
            await asyncio.sleep(self.config.hang_s)
            _close(request)
            return web.Response(status=200)
        if fault == "finish_error":
            partial = _partial(reply)
            usage = self._usage(_with_completion(reply, _partial_tokens(reply)), model, billed=False)
            choice_error = {
                "code": 502,
                "message": "Provider returned error: connection reset during generation",
                "metadata": {"error_type": "provider_error", "provider_name": model.provider},
            }
            doc = completion_doc(
                gen_id,
                created,
                model,
                reply,
                usage,
                dialect,
                content=partial,
                choice_error=choice_error,
            )
            return web.Response(body=orjson.dumps(doc), content_type=_JSON, headers=headers)
        if fault == "empty_choices":
            usage = self._usage(_with_completion(reply, 0), model, billed=False)
            doc = completion_doc(gen_id, created, model, reply, usage, dialect, empty=True)
            return web.Response(body=orjson.dumps(doc), content_type=_JSON, headers=headers)

        usage = self._usage(reply, model)
        payload = orjson.dumps(completion_doc(gen_id, created, model, reply, usage, dialect))
        if fault == "torn":
            resp = web.StreamResponse(headers=headers)
            resp.content_type = _JSON
            resp.content_length = len(payload)
            await resp.prepare(request)
            await resp.write(payload[: len(payload) // 2])
            _close(request)
            return resp
        if fault == "whitespace":
            # Heartbeat bytes go out before the body is known, so no Content-Length (chunked).
            resp = web.StreamResponse(headers=headers)
            resp.content_type = _JSON
            await resp.prepare(request)
            await resp.write(_HEARTBEAT)
            await self._delay()
            await resp.write(payload)
            await resp.write_eof()
            return resp
        return web.Response(body=payload, content_type=_JSON, headers=headers)

    async def _stream(
        self, request: web.Request, gen_id: str, model: Model, reply: Reply, fault: str | None,
        with_usage: bool = True,
    ) -> web.StreamResponse:
        dialect = self._dialect
        if fault == "drop":
            await self._delay()
            _close(request)
            return web.Response(status=200)
        created = int(time.time())
        headers = self._headers({"X-Generation-Id": gen_id, "Cache-Control": "no-cache"})
        resp = web.StreamResponse(headers=headers)
        resp.content_type = "text/event-stream"
        await resp.prepare(request)
        try:
            await resp.write(_PROCESSING)
            await self._delay()
            if fault == "hang":
                await asyncio.sleep(self.config.hang_s)
                _close(request)
                return resp
            if fault == "whitespace":
                await resp.write(_PROCESSING + _PROCESSING)

            def chunk(
                delta: dict[str, Any], finish: str | None = None, native: str | None = None
            ) -> bytes:
                return _sse(chunk_doc(gen_id, created, model, dialect, delta, finish, native))

            pieces = split_pieces(reply.content)
            if fault in ("finish_error", "error200", "torn"):
                head = pieces[: max(1, min(2, len(pieces) - 1))] if pieces else [""]
                head_bytes = b"".join(chunk({"role": "assistant", "content": p}) for p in head)
                await resp.write(head_bytes)
                if fault == "torn":
                    _close(request)
                    return resp
                error = dict(_STREAM_ERROR)
                error["metadata"] = {
                    "error_type": "provider_error",
                    "provider_name": model.provider,
                }
                await resp.write(_sse(error_chunk_doc(gen_id, created, model, dialect, error)))
                await resp.write_eof()
                return resp
            if fault == "empty_choices":
                usage = self._usage(_with_completion(reply, 0), model, billed=False)
                await resp.write(_sse(usage_chunk_doc(gen_id, created, model, dialect, usage)))
                await resp.write(b"data: [DONE]\n\n")
                await resp.write_eof()
                return resp

            parts: list[bytes] = []
            if reply.reasoning:
                for p in split_pieces(reply.reasoning, 2):
                    parts.append(chunk({"role": "assistant", "content": "", "reasoning": p}))
            if reply.tool_calls:
                parts.append(
                    chunk({"role": "assistant", "content": None, "tool_calls": reply.tool_calls})
                )
            for i, p in enumerate(pieces):
                parts.append(chunk({"role": "assistant", "content": p}))
                if i == 0 and len(pieces) > 1:
                    # Keep-alive comments may also arrive between data lines (wire §4).
                    parts.append(_PROCESSING)
            parts.append(
                chunk(
                    {"role": "assistant", "content": ""},
                    reply.finish_reason,
                    reply.native_finish_reason,
                )
            )
            if with_usage:
                usage = self._usage(reply, model)
                parts.append(_sse(usage_chunk_doc(gen_id, created, model, dialect, usage)))
            parts.append(b"data: [DONE]\n\n")
            await resp.write(b"".join(parts))
            await resp.write_eof()
        except ConnectionError:
            # The client went away mid-stream; the generation stays billed, as Google does.
            pass
        return resp

    async def key(self, request: web.Request) -> web.Response:
        """GET key and auth/key: OpenRouter's key info with the billed total as usage."""
        self.received.add(request)
        try:
            self._check_auth(request)
        except _Rejected as exc:
            return self._reject(exc.reply)
        used = self.ledger.billed_total_usd()
        limit = self.config.key_limit_usd
        data = {
            "label": "sim-key",
            "limit": limit,
            "limit_remaining": None if limit is None else max(0.0, limit - used),
            "limit_reset": None,
            "include_byok_in_limit": False,
            "usage": used,
            "usage_daily": used,
            "usage_weekly": used,
            "usage_monthly": used,
            "byok_usage": 0,
            "byok_usage_daily": 0,
            "byok_usage_weekly": 0,
            "byok_usage_monthly": 0,
            "is_free_tier": False,
            "is_management_key": False,
            "is_provisioning_key": False,
            "creator_user_id": None,
            "expires_at": None,
            "rate_limit": {"requests": -1, "interval": "10s", "note": "deprecated"},
        }
        return self._json({"data": data})

    async def models(self, request: web.Request) -> web.Response:
        """GET models: OpenRouter's catalog with string prices per token; others list ids only."""
        self.received.add(request)
        body = models_payload() if self._dialect == "openrouter" else openai_models_payload()
        return web.Response(body=body, content_type=_JSON, headers=self._headers())

    async def generation(self, request: web.Request) -> web.Response:
        """GET generation?id=...: what the ledger knows about one generation."""
        self.received.add(request)
        try:
            self._check_auth(request)
        except _Rejected as exc:
            return self._reject(exc.reply)
        entry = self.ledger.by_gen_id(request.query.get("id", ""))
        if entry is None:
            return self._answer(error_reply(self._dialect, 404, "Generation not found"))
        cost = entry.cost if entry.billed else 0.0
        data = {
            "id": entry.gen_id,
            "model": entry.model,
            "provider_name": entry.provider,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "streamed": entry.streamed,
            "cancelled": entry.outcome in ("drop", "hang"),
            "finish_reason": entry.finish_reason,
            "native_finish_reason": None,
            "tokens_prompt": entry.prompt_tokens,
            "tokens_completion": entry.completion_tokens,
            "native_tokens_prompt": entry.prompt_tokens,
            "native_tokens_completion": entry.completion_tokens,
            "native_tokens_reasoning": entry.reasoning_tokens,
            "native_tokens_cached": entry.cached_tokens,
            "total_cost": cost,
            "usage": cost,
            "upstream_inference_cost": None,
            "cache_discount": None,
            "is_byok": False,
        }
        return self._json({"data": data})

    async def sim_ledger(self, request: web.Request) -> web.Response:
        """GET /_sim/ledger: the ledger as JSON (a test helper, not OpenRouter)."""
        return web.Response(body=self.ledger.to_json(), content_type=_JSON)

    async def sim_requests(self, request: web.Request) -> web.Response:
        """GET /_sim/requests: the last requests received, key removed (a test helper)."""
        return web.Response(body=self.received.to_json(), content_type=_JSON)

    async def sim_reset(self, request: web.Request) -> web.Response:
        """POST /_sim/reset: clear the ledger (and request log), the rate window and marker counts."""
        self.ledger.reset()
        self.window.reset()
        self.picker.reset()
        self.upstream_styles.reset()
        return web.Response(body=b'{"ok":true}', content_type=_JSON)


# The chat-completions parameters OpenAI's API accepts (its API reference, 2026).
OPENAI_CHAT_PARAMS = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n",
    "stream", "stream_options", "stop", "presence_penalty", "frequency_penalty", "logit_bias",
    "logprobs", "top_logprobs", "user", "seed", "tools", "tool_choice", "parallel_tool_calls",
    "response_format", "service_tier", "store", "metadata", "reasoning_effort", "modalities",
    "audio", "prediction", "web_search_options", "functions", "function_call", "verbosity",
    "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
})


def _close(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


def _partial(reply: Reply) -> str:
    return reply.content[: len(reply.content) // 2]


def _partial_tokens(reply: Reply) -> int:
    return math.ceil(len(_partial(reply)) / 4) + reply.reasoning_tokens


def _with_completion(reply: Reply, completion: int) -> Reply:
    return Reply(
        reply.content,
        reply.reasoning,
        reply.tool_calls,
        reply.finish_reason,
        reply.native_finish_reason,
        reply.prompt_tokens,
        completion,
        min(reply.reasoning_tokens, completion),
        reply.cached_tokens,
    )
