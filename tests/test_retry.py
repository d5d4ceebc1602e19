"""retry.py: every row of docs/design.md §4 and docs/openrouter-wire.md §1, §2, §7, as a table."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from batchrun.retry import (
    Verdict,
    backoff,
    classify_response,
    parse_duration,
    parse_retry_after,
    retry_wait,
)

NOW = 1_788_825_590.0  # a fixed wall clock: ten seconds before 1788825600000 ms (a UTC midnight)


def err(code: Any = None, message: str | None = None, **fields: Any) -> bytes:
    """An error body in OpenRouter's shape; ``code`` left out when None."""
    error: dict[str, Any] = {} if code is None else {"code": code}
    if message is not None:
        error["message"] = message
    error.update(fields)
    return orjson.dumps({"error": error, "user_id": "user_1"})


def reply(finish: Any = "stop", content: str = '{"label": "ok"}', **choice: Any) -> bytes:
    body = {
        "id": "gen-1-abc", "object": "chat.completion", "model": "m", "provider": "P",
        "choices": [{"index": 0, "finish_reason": finish,
                     "message": {"role": "assistant", "content": content}, **choice}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5, "cost": 1e-6},
    }
    return orjson.dumps(body)


HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
)

# (test id, status, headers, raw body, keyword args, kind, retry_after, fallback_models)
CASES: list[tuple[str, int, dict[str, str], bytes, dict[str, Any], str | None, float | None, tuple[str, ...]]] = [
    # -- 429: rate limited, each way of saying how long to wait ---------------------------------
    ("429-retry-after-seconds", 429, {"Retry-After": "3"}, err(429, "Rate limit exceeded"), {},
     "rate_limited", 3.0, ()),
    ("429-retry-after-fraction", 429, {"retry-after": "0.25"}, err(429, "slow down"), {},
     "rate_limited", 0.25, ()),
    ("429-retry-after-ms", 429, {"retry-after-ms": "1500"}, err(429, "slow down"), {},
     "rate_limited", 1.5, ()),
    ("429-retry-after-http-date", 429, {"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"}, b"",
     {"now": 1_445_412_480.0}, "rate_limited", 10.0, ()),
    ("429-x-ratelimit-reset-epoch-ms", 429,
     {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1788825600000"},
     err(429, "Rate limit exceeded: free-models-per-min."), {"now": NOW}, "rate_limited", 10.0, ()),
    ("429-openai-reset-6m0s", 429, {"x-ratelimit-reset-requests": "6m0s"},
     err("rate_limit_exceeded", "Rate limit reached for gpt-4o-mini (RPM)", type="requests"), {},
     "rate_limited", 360.0, ()),
    ("429-openai-reset-17.203s", 429, {"x-ratelimit-reset-tokens": "17.203s"},
     err("rate_limit_exceeded", "Rate limit reached (TPM)", type="tokens"), {},
     "rate_limited", 17.203, ()),
    ("429-openai-reset-12ms", 429, {"x-ratelimit-reset-requests": "12ms"},
     err("rate_limit_exceeded", "Rate limit reached (RPM)"), {}, "rate_limited", 0.012, ()),
    ("429-openai-both-resets-longest-wins", 429,
     {"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"},
     err("rate_limit_exceeded", "Rate limit reached"), {}, "rate_limited", 360.0, ()),
    ("429-no-hint", 429, {}, err(429, "Rate limit exceeded"), {}, "rate_limited", None, ()),
    ("429-upstream-shared-pool", 429, {},
     err(429, "google/gemini-2.0-flash-lite-001 is temporarily rate-limited upstream",
         metadata={"raw": "quota", "provider_name": "Google",
                   "limit_source": "upstream_provider_shared_pool"}),
     {}, "rate_limited", None, ()),
    ("429-availability-retry-after", 429, {},
     err(429, "Rate limited", availability={"retryable": True, "retry_after": 4}), {},
     "rate_limited", 4.0, ()),
    ("429-code-absent", 429, {"Retry-After": "1"}, err(None, "Too many requests"), {},
     "rate_limited", 1.0, ()),
    # -- credits: 429s that waiting does not cure, and 402 -------------------------------------
    ("429-openai-insufficient-quota", 429, {},
     err("insufficient_quota", "You exceeded your current quota, please check your plan and billing details.",
         type="insufficient_quota"),
     {}, "insufficient_credits", None, ()),
    ("429-free-models-per-day", 429, {"X-RateLimit-Reset": "1788825600000"},
     err(429, "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day"),
     {"now": NOW}, "insufficient_credits", 10.0, ()),
    ("429-free-models-per-day-reset-in-body", 429, {},
     err(429, "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day",
         metadata={"headers": {"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0",
                               "X-RateLimit-Reset": "1788825600000"}}),
     {"now": 1_788_820_000.0}, "insufficient_credits", 5600.0, ()),
    ("402-credits", 402, {"Retry-After": "5"},
     err(402, "Insufficient credits. Add more using https://openrouter.ai/credits",
         metadata={"limit_source": "openrouter_credits"}),
     {}, "insufficient_credits", None, ()),
    ("402-key-limit", 402, {},
     err(402, "Key limit exceeded", metadata={"limit_source": "openrouter_key_limit"}), {},
     "insufficient_credits", None, ()),
    ("402-can-only-afford", 402, {},
     err(402, "This request requires more credits, or fewer max_tokens. You requested up to 4096 tokens, "
              "but can only afford 1200."),
     {}, "insufficient_credits", None, ()),
    ("402-in-flight-budget", 402, {"Retry-After": "2"},
     err(402, "Insufficient credits given your current in-flight requests. Retry after in-flight requests settle",
         metadata={"limit_source": "openrouter_in_flight_budget"}),
     {}, "rate_limited", 2.0, ()),
    ("402-in-flight-budget-by-limit-source-only", 402, {"retry-after-ms": "750"},
     err(402, "Payment required", metadata={"limit_source": "openrouter_in_flight_budget"}), {},
     "rate_limited", 0.75, ()),
    # -- 401 / 403 --------------------------------------------------------------------------
    ("401-no-credentials", 401, {}, err(401, "No auth credentials found"), {}, "auth_error", None, ()),
    ("401-user-not-found", 401, {}, err(401, "User not found."), {}, "auth_error", None, ()),
    ("401-empty-body", 401, {}, b"", {}, "auth_error", None, ()),
    ("403-moderation-reasons", 403, {},
     err(403, "google/gemini requires moderation on OpenAI. Your input was flagged for \"harassment\".",
         metadata={"reasons": ["harassment"], "flagged_input": "you are...", "provider_name": "OpenAI",
                   "model_slug": "openai/gpt-4o"}),
     {}, "content_filtered", None, ()),
    ("403-moderation-flagged-input-only", 403, {},
     err(403, "Input was flagged", metadata={"flagged_input": "some text"}), {},
     "content_filtered", None, ()),
    ("403-guardrail", 403, {},
     err(403, "Request blocked by guardrail", metadata={"patterns": ["ssn"]}), {},
     "auth_error", None, ()),
    ("403-key-permission", 403, {}, err(403, "This key is not allowed to use this model"), {},
     "auth_error", None, ()),
    ("403-region", 403, {}, err(403, "This model is not available in your region."), {},
     "auth_error", None, ()),
    # -- model gone vs bad request --------------------------------------------------------------
    ("400-not-a-valid-model-id", 400, {}, err(400, "foo/bar is not a valid model ID"), {},
     "model_unavailable", None, ()),
    ("400-not-a-valid-model-id-with-fallbacks", 400, {},
     err(400, "foo/bar is not a valid model ID",
         availability={"code": "model_not_found", "retryable": False,
                       "fallback_models": ["google/gemini-2.5-flash-lite", 7]}),
     {}, "model_unavailable", None, ("google/gemini-2.5-flash-lite",)),
    ("404-no-endpoints-with-fallbacks", 404, {},
     err(404, "No endpoints found for google/gemini-2.0-flash-lite-001.",
         availability={"code": "model_deprecated", "retryable": False,
                       "fallback_models": ["google/gemini-2.5-flash-lite", "openai/gpt-4o-mini"]}),
     {}, "model_unavailable", None, ("google/gemini-2.5-flash-lite", "openai/gpt-4o-mini")),
    ("404-availability-code-only", 404, {},
     err(None, "Gone", availability={"code": "model_retired", "fallback_models": ["x/y"]}), {},
     "model_unavailable", None, ("x/y",)),
    ("404-retryable", 404, {},
     err(404, "No endpoints found that can handle the request right now",
         availability={"retryable": True, "retry_after": 2}),
     {}, "server_error", 2.0, ()),
    ("404-plain", 404, {}, err(404, "Not Found"), {}, "invalid_request", None, ()),
    # A request's own parameters that no endpoint serves stop that line, not the model's others.
    ("404-no-endpoints-for-tools", 404, {}, err(404, "No endpoints found that support tool use."), {},
     "invalid_request", None, ()),
    ("404-no-allowed-providers", 404, {},
     err(404, "No allowed providers are available for the selected model."), {}, "invalid_request", None, ()),
    ("400-context-length", 400, {},
     err(400, "This endpoint's maximum context length is 8192 tokens. However, you requested about 9012 tokens."),
     {}, "invalid_request", None, ()),
    ("400-openai-context-length-string-code", 400, {},
     err("context_length_exceeded", "This model's maximum context length is 128000 tokens.", param="messages"),
     {}, "invalid_request", None, ()),
    ("400-feature-not-available-is-not-model-gone", 400, {},
     err(400, "Tool use is not available for this model"), {}, "invalid_request", None, ()),
    ("413", 413, {}, b"Request Entity Too Large", {}, "invalid_request", None, ()),
    ("422", 422, {}, err(422, "Unprocessable Entity"), {}, "invalid_request", None, ()),
    # -- server errors: retried ------------------------------------------------------------------
    ("408", 408, {}, err(408, "Request timed out"), {}, "server_error", None, ()),
    ("500-code-string", 500, {}, err("server_error", "Internal Server Error"), {}, "server_error", None, ()),
    ("500-code-absent", 500, {}, err(None, "Internal Server Error"), {}, "server_error", None, ()),
    ("502", 502, {}, err(502, "Provider returned error", metadata={"raw": "upstream boom"}), {},
     "server_error", None, ()),
    ("502-html-page", 502, {"Content-Type": "text/html"}, HTML_502, {}, "server_error", None, ()),
    ("503-retry-after", 503, {"Retry-After": "5"}, err(503, "No available providers"), {},
     "server_error", 5.0, ()),
    ("504", 504, {}, b"", {}, "server_error", None, ()),
    ("524", 524, {}, b"error code: 524", {}, "server_error", None, ()),
    ("529", 529, {}, err(529, "Overloaded"), {}, "server_error", None, ()),
    # -- HTTP 200 that is not a success ----------------------------------------------------------
    ("200-error-body", 200, {}, err(502, "Provider returned error", metadata={"raw": "boom"}), {},
     "provider_error", None, ()),
    ("200-error-body-code-string", 200, {}, err("server_error", "stream failed"), {},
     "provider_error", None, ()),
    ("200-error-body-code-absent", 200, {}, err(None, "something broke"), {}, "provider_error", None, ()),
    ("200-error-body-rate-limit-code", 200, {}, err(429, "Provider returned error"), {},
     "rate_limited", None, ()),
    ("200-finish-error", 200, {},
     reply("error", "partial", error={"code": 502, "message": "upstream died",
                                      "metadata": {"error_type": "provider_error"}}),
     {}, "provider_error", None, ()),
    ("200-empty-choices", 200, {}, orjson.dumps({"id": "gen-1", "choices": [], "usage": {}}), {},
     "provider_error", None, ()),
    ("200-missing-choices", 200, {}, orjson.dumps({"id": "gen-1", "usage": {}}), {},
     "provider_error", None, ()),
    ("200-choices-not-objects", 200, {}, orjson.dumps({"choices": ["x"]}), {}, "provider_error", None, ()),
    ("200-finish-null", 200, {}, reply(None, ""), {}, "provider_error", None, ()),
    ("200-content-filter", 200, {}, reply("content_filter", ""), {}, "content_filtered", None, ()),
    ("200-length-no-schema", 200, {}, reply("length", "a long ans"), {}, None, None, ()),
    ("200-length-schema-required", 200, {}, reply("length", '{"label": "po'), {"schema_required": True},
     "invalid_output", None, ()),
    ("200-stop-schema-required", 200, {}, reply("stop"), {"schema_required": True}, None, None, ()),
    ("200-tool-calls", 200, {}, reply("tool_calls", ""), {}, None, None, ()),
    ("200-leading-heartbeats", 200, {}, b"\n\n   \r\n\t" + reply("stop"), {}, None, None, ()),
    ("200-torn-json", 200, {}, reply("stop")[:40], {}, "provider_error", None, ()),
    ("200-not-json", 200, {}, b"OK", {}, "provider_error", None, ()),
    ("200-json-array", 200, {}, b"[1, 2]", {}, "provider_error", None, ()),
    ("200-empty-body", 200, {}, b"", {}, "provider_error", None, ()),
]


@pytest.mark.parametrize(
    ("status", "headers", "raw", "kwargs", "kind", "wait", "fallbacks"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_classify_response(
    status: int, headers: dict[str, str], raw: bytes, kwargs: dict[str, Any],
    kind: str | None, wait: float | None, fallbacks: tuple[str, ...],
) -> None:
    verdict = classify_response(status, headers, raw, **kwargs)
    assert verdict.kind == kind
    if wait is None:
        assert verdict.retry_after is None
    else:
        assert verdict.retry_after == pytest.approx(wait, rel=1e-9)
    assert verdict.fallback_models == fallbacks


def test_success_carries_the_parsed_body_despite_heartbeats() -> None:
    raw = reply("stop", "hello")
    verdict = classify_response(200, {}, b"\n \n" + raw)
    assert verdict == Verdict(None, "", orjson.loads(raw))


@pytest.mark.parametrize(
    ("status", "raw", "message"),
    [
        (400, err(400, "foo/bar is not a valid model ID"), "foo/bar is not a valid model ID"),
        (502, err(502, "Provider returned error", metadata={"raw": "upstream boom"}),
         "Provider returned error: upstream boom"),
        (502, HTML_502, "HTTP 502 (an HTML page, likely from a proxy)"),
        (524, b"error code: 524", "error code: 524"),
        (504, b"", "HTTP 504"),
        (500, err(500, ""), "HTTP 500"),
        (200, err(None, "something broke"), "HTTP 200 with an error: something broke"),
        (200, orjson.dumps({"choices": []}), "HTTP 200 with no choices (empty reply)"),
        (200, reply(None, ""), "HTTP 200 with no finish_reason (incomplete)"),
        (200, reply("error", "", error={"message": "upstream died"}), "finish_reason 'error': upstream died"),
        (200, reply("error", ""), "finish_reason 'error': the provider stopped with finish_reason 'error'"),
        (200, b"{torn", "HTTP 200 with a body that is not a JSON object"),
    ],
)
def test_classify_response_messages(status: int, raw: bytes, message: str) -> None:
    assert classify_response(status, {}, raw).message == message


def test_non_json_body_is_kept_as_text() -> None:
    verdict = classify_response(502, {}, HTML_502)
    assert verdict.body == HTML_502.strip().decode()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("17.203s", 17.203),
        ("12ms", 0.012),
        ("9ms", 0.009),
        ("1s", 1.0),
        ("1h2m3s", 3723.0),
        ("1m30.5s", 90.5),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("100ns", 1e-7),
        ("2.5", 2.5),
        (" 3s ", 3.0),
        ("", None),
        ("   ", None),
        ("soon", None),
        ("5x", None),
        ("1m30", None),
        ("s", None),
        ("-1s", None),
        ("1s 2s", None),
    ],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    result = parse_duration(text)
    if seconds is None:
        assert result is None
    else:
        assert result == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize(
    ("headers", "body", "now", "seconds"),
    [
        pytest.param({"retry-after-ms": "250", "retry-after": "9"}, None, 0.0, 0.25, id="ms-beats-seconds"),
        pytest.param({"retry-after-ms": "abc", "retry-after": "2"}, None, 0.0, 2.0, id="bad-ms-falls-through"),
        pytest.param({"retry-after": "4", "x-ratelimit-reset": "1788825600000"}, None, NOW, 4.0,
                     id="retry-after-beats-reset"),
        pytest.param({"retry-after": "soon", "x-ratelimit-reset": "1788825600000"}, None, NOW, 10.0,
                     id="bad-retry-after-falls-through"),
        pytest.param({"x-ratelimit-reset": "1788825600000", "x-ratelimit-reset-requests": "6m0s"}, None,
                     NOW, 10.0, id="reset-beats-openai-duration"),
        pytest.param({"x-ratelimit-reset": "1700000010"}, None, 1_700_000_000.0, 10.0, id="reset-epoch-seconds"),
        pytest.param({"x-ratelimit-reset": "30"}, None, NOW, 30.0, id="reset-as-delay"),
        pytest.param({"x-ratelimit-reset": "1s"}, None, NOW, 1.0, id="reset-as-duration"),
        pytest.param({"x-ratelimit-reset": "1788825500000"}, None, NOW, 0.0, id="reset-in-the-past"),
        pytest.param({"retry-after": "-3"}, None, 0.0, 0.0, id="negative-clamped"),
        pytest.param({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None, 1_445_412_490.0, 0.0,
                     id="http-date-in-the-past"),
        pytest.param({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, None, 1_445_412_480.0, 10.0,
                     id="http-date"),
        pytest.param({"x-ratelimit-reset-requests": "6m0s"},
                     {"error": {"availability": {"retry_after": 3}}}, 0.0, 360.0,
                     id="headers-beat-body"),
        pytest.param({}, {"error": {"availability": {"retry_after": 3}}}, 0.0, 3.0, id="availability"),
        pytest.param({}, {"error": {"availability": {"retry_after": "1.5"}}}, 0.0, 1.5,
                     id="availability-string"),
        pytest.param({}, {"error": {"metadata": {"headers": {"X-RateLimit-Reset": "1788825600000"}}}}, NOW,
                     10.0, id="metadata-headers-reset"),
        pytest.param({}, {"error": {"metadata": {"headers": {"X-RateLimit-Reset": 1788825600000}}}}, NOW,
                     10.0, id="metadata-headers-reset-number"),
        pytest.param({"retry-after": "inf"}, None, 0.0, None, id="infinite-ignored"),
        pytest.param({"retry-after": "nan"}, None, 0.0, None, id="nan-ignored"),
        pytest.param({}, {"error": {"availability": {"retry_after": True}}}, 0.0, None, id="bool-ignored"),
        pytest.param({}, "<html>", 0.0, None, id="html-body"),
        pytest.param({}, None, 0.0, None, id="nothing"),
    ],
)
def test_parse_retry_after(headers: dict[str, str], body: Any, now: float, seconds: float | None) -> None:
    result = parse_retry_after(headers, body, now)
    if seconds is None:
        assert result is None
    else:
        assert result == pytest.approx(seconds, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    ("attempt", "rng_value", "kwargs", "expected"),
    [
        (1, 0.999, {}, 0.4995),
        (2, 0.999, {}, 0.999),
        (3, 0.999, {}, 1.998),
        (6, 0.999, {}, 15.984),
        (7, 0.999, {}, 29.97),  # 0.5 * 64 = 32 is over the cap of 30
        (50, 0.999, {}, 29.97),
        (5000, 0.999, {}, 29.97),  # no OverflowError for a huge --max-attempts
        (0, 0.999, {}, 0.4995),  # attempt 0 counts as the first
        (1, 0.0, {}, 0.0),
        (5000, 0.0, {}, 0.0),
        (4, 0.5, {"base": 0.01, "cap": 0.05}, 0.025),
        (5, 0.5, {"base": 0.01, "cap": 0.05}, 0.025),
        (3, 0.999, {"base": 1.0, "cap": 2.0}, 1.998),
    ],
)
def test_backoff(attempt: int, rng_value: float, kwargs: dict[str, float], expected: float) -> None:
    assert backoff(attempt, rng=lambda: rng_value, **kwargs) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("attempt", range(1, 13))
def test_backoff_full_jitter_bounds(attempt: int) -> None:
    ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
    assert backoff(attempt, rng=lambda: 0.0) == 0.0
    high = backoff(attempt, rng=lambda: 0.999)
    assert high == pytest.approx(0.999 * ceiling, rel=1e-12)
    assert high < ceiling


@pytest.mark.parametrize(
    ("verdict", "attempt", "expected"),
    [
        (Verdict("rate_limited", retry_after=4.0), 1, 4.0),
        (Verdict("rate_limited", retry_after=0.0), 5, 0.0),  # a hint of 0 is a hint, not "no hint"
        (Verdict("server_error"), 1, 0.25),
        (Verdict("server_error"), 3, 1.0),
        (Verdict("provider_error"), 20, 15.0),
    ],
)
def test_retry_wait(verdict: Verdict, attempt: int, expected: float) -> None:
    assert retry_wait(verdict, attempt, rng=lambda: 0.5) == pytest.approx(expected, rel=1e-12)


def test_retry_wait_passes_base_and_cap_to_backoff() -> None:
    assert retry_wait(Verdict("timeout"), 10, base=0.01, cap=0.05, rng=lambda: 1.0) == 0.05


UPSTREAM = "google/gemini-2.0-flash-lite-001 is temporarily rate-limited upstream"
SHARED_POOL = {"limit_source": "upstream_provider_shared_pool", "provider_name": "Google",
               "raw": UPSTREAM}
REMAINING_0 = {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0",
               "X-RateLimit-Reset": "1788825600000"}


@pytest.mark.parametrize(
    ("status", "headers", "raw", "over_limit", "upstream"),
    [
        # -- the client's own limit: no upstream source named, and the server says so ------------
        pytest.param(429, REMAINING_0, err(429, "Rate limit exceeded: free-models-per-min."), True,
                     False, id="free-per-min-remaining-0"),
        pytest.param(429, {"Retry-After": "3"}, err(429, "Rate limit exceeded: free-models-per-min."),
                     True, False, id="free-per-min-message-alone"),
        pytest.param(429, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-remaining-tokens": "1234"},
                     err("rate_limit_exceeded", "Rate limit reached (RPM)"), True, False,
                     id="openai-remaining-requests-0"),
        pytest.param(429, {"x-ratelimit-remaining-tokens": "0"}, err("rate_limit_exceeded", "TPM"), True,
                     False, id="openai-remaining-tokens-0"),
        pytest.param(429, {}, err(429, "Rate limit exceeded",
                                  metadata={"headers": {"X-RateLimit-Remaining": "0"}}), True, False,
                     id="remaining-0-in-body"),
        pytest.param(402, {"Retry-After": "2"},
                     err(402, "in-flight", metadata={"limit_source": "openrouter_in_flight_budget"}), True,
                     False, id="in-flight-402"),
        # -- neither: only the share of recent answers can slow the pool -------------------------
        pytest.param(429, {"X-RateLimit-Remaining": "3"}, err(429, "slow down"), False, False,
                     id="remaining-left"),
        pytest.param(429, {"Retry-After": "1"}, err(429, "Rate limit exceeded"), False, False,
                     id="unattributed-retry-after-only"),
        # -- an upstream source named: this request's alone, whatever X-RateLimit-* it carries -----
        pytest.param(429, {"Retry-After": "1"}, err(429, UPSTREAM, metadata=SHARED_POOL), False, True,
                     id="upstream-retry-after"),
        pytest.param(429, {"Retry-After": "1", **REMAINING_0}, err(429, UPSTREAM, metadata=SHARED_POOL),
                     False, True, id="upstream-remaining-0-in-headers"),
        pytest.param(429, {"Retry-After": "1"},
                     err(429, UPSTREAM, metadata={**SHARED_POOL, "headers": REMAINING_0}), False, True,
                     id="upstream-remaining-0-in-metadata"),
        pytest.param(429, REMAINING_0,
                     err(429, "m is temporarily rate-limited upstream"), False, True,
                     id="upstream-message-alone"),
        pytest.param(429, REMAINING_0,
                     err(429, "Provider returned error",
                         metadata={"raw": '{"error":{"code":429,"message":"quota"}}', "provider_name": "Groq"}),
                     False, True, id="provider-returned-error"),
        pytest.param(429, {"x-ratelimit-remaining-requests": "0"},
                     err(429, "Too many requests", metadata={"provider_name": "Together"}), False, True,
                     id="provider-name-alone"),
        pytest.param(429, REMAINING_0,
                     err(429, "Rate limit exceeded", metadata={"limit_source": "upstream_provider_shared_pool"}),
                     False, True, id="limit-source-alone"),
        pytest.param(200, REMAINING_0, err(429, "Rate limit exceeded"), False, True,
                     id="429-in-a-200-is-the-providers"),
        pytest.param(503, {"Retry-After": "2"}, err(503, "overloaded"), False, False, id="503"),
    ],
)
def test_own_limit_and_upstream_429s(
    status: int, headers: dict[str, str], raw: bytes, over_limit: bool, upstream: bool
) -> None:
    verdict = classify_response(status, headers, raw)
    assert verdict.kind == ("server_error" if status == 503 else "rate_limited")
    assert (verdict.over_limit, verdict.upstream) == (over_limit, upstream)
    assert not (verdict.over_limit and verdict.upstream)  # an upstream 429 is never our own limit
