"""The simulated Batch APIs over real loopback HTTP: lifecycle, checks, faults, results, billing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from simclient import Answer, call

from batchrun.sim import SimServer

# Fast lifecycle for tests: validating 50 ms, done at 300 ms, visible at once, list cache 0.
FAST: dict[str, Any] = {
    "batch_validating_s": 0.05,
    "batch_processing_s": 0.3,
    "batch_visibility_s": 0.0,
    "batch_list_cache_s": 0.0,
    "retry_after_s": 0.05,
}
MODEL = "openai/gpt-4o-mini"


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 12, **extra}


def submit_body(
    requests: list[dict[str, Any]], *, model: str = MODEL, first: str = "endpoint", **envelope: Any
) -> bytes:
    """A create body with keys in a chosen order (`first="requests"` breaks the order rule)."""
    head: dict[str, Any] = {"endpoint": "/v1/chat/completions", "model": model, **envelope}
    if first == "requests":
        return orjson.dumps({"requests": requests, **head})
    return orjson.dumps({**head, "requests": requests})


def rows(n: int, prefix: str = "r") -> list[dict[str, Any]]:
    return [{"custom_id": f"{prefix}{i}", "body": chat(f"Say something about item {i}.")} for i in range(n)]


def get(server: SimServer, path: str) -> Answer:
    return call(server.base_url, None, path=path, method="GET")


def ledger(server: SimServer) -> dict[str, Any]:
    return call(server.root_url, None, path="/_sim/ledger", method="GET").json()


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.02)


def finished(server: SimServer, batch_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        ans = get(server, f"/batches/{batch_id}")
        if ans.status == 200 and ans.json()["status"] in ("completed", "failed", "expired"):
            return ans.json()
        return None

    return wait_for(done)


@pytest.fixture
def fast(sim_factory: Callable[..., SimServer]) -> SimServer:
    return sim_factory(**FAST)


# -- OpenRouter: the happy path -----------------------------------------------------------------


def test_openrouter_happy_path_bills_each_row_once_at_the_batch_price(fast: SimServer) -> None:
    ans = call(fast.base_url, submit_body(rows(5)), path="/batches")
    assert ans.status == 202
    created = ans.json()
    assert created["status"] == "validating"
    assert created["request_counts"] == {"total": 5, "completed": 0, "failed": 0}
    assert created["usage"] is None and created["results"] is None and created["error"] is None
    assert created["provider"] == "OpenAI" and created["expires_at"] > created["created_at"]
    import re

    assert re.fullmatch(r"batch-\d{10}-[A-Za-z0-9]{20}", created["id"])
    doc = finished(fast, created["id"])
    assert doc["status"] == "completed"
    assert doc["request_counts"] == {"total": 5, "completed": 5, "failed": 0}
    assert [r["custom_id"] for r in doc["results"]] == [f"r{i}" for i in range(5)]
    for r in doc["results"]:
        assert r["error"] is None and r["response"]["status_code"] == 200
        usage = r["response"]["body"]["usage"]
        assert "cost" not in usage and usage["total_tokens"] > 0
    book = ledger(fast)
    billed = book["billed_by_batch"][created["id"]]
    assert billed == {"rows": 5, "distinct_custom_ids": 5, "billed_usd": pytest.approx(doc["usage"]["cost"])}
    # Half the sync price of the same tokens.
    sync = sum(e["prompt_tokens"] * 0.15e-6 + e["completion_tokens"] * 0.60e-6 for e in book["entries"])
    assert doc["usage"]["cost"] == pytest.approx(sync / 2)
    # Reading again bills nothing more.
    get(fast, f"/batches/{created['id']}")
    assert ledger(fast)["counts"]["batch_rows_billed"] == 5


def test_openrouter_results_pages_list_and_delete(fast: SimServer) -> None:
    batch_id = call(fast.base_url, submit_body(rows(7)), path="/batches").json()["id"]
    finished(fast, batch_id)
    seen: list[str] = []
    cursor = None
    while True:
        query = f"?limit=3&cursor={cursor}" if cursor else "?limit=3"
        page = get(fast, f"/batches/{batch_id}/results{query}").json()
        seen += [r["custom_id"] for r in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        # Pages are stable: the same cursor gives the same page.
        again = get(fast, f"/batches/{batch_id}/results{query}").json()
        assert again == page
        cursor = page["next_cursor"]
    assert seen == [f"r{i}" for i in range(7)]
    listed = get(fast, "/batches").json()
    assert listed["object"] == "list" and listed["first_id"] == batch_id
    assert listed["data"][0]["results"] is None and listed["has_more"] is False
    gone = call(fast.base_url, None, path=f"/batches/{batch_id}", method="DELETE")
    assert gone.status == 200
    assert gone.json() == {
        "id": batch_id,
        "object": "batch",
        "deletion": {"openrouter": "deleted", "upstream": {"provider": "OpenAI", "status": "unsupported"}},
    }
    assert get(fast, f"/batches/{batch_id}").status == 404
    assert call(fast.base_url, None, path=f"/batches/{batch_id}", method="DELETE").status == 404
    assert get(fast, "/batches").json()["data"] == []
    cancel = call(fast.base_url, None, path=f"/batches/{batch_id}/cancel")
    assert (cancel.status, cancel.raw) == (404, b"Not Found")
    # Billing outlives the deletion.
    assert ledger(fast)["billed_by_batch"][batch_id]["rows"] == 7


# -- OpenRouter: the synchronous checks ---------------------------------------------------------

LONG = "x" * 64


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            submit_body(rows(1), first="requests"),
            400,
            "endpoint and model are required and must appear before requests in the request body",
        ),
        (
            orjson.dumps({"endpoint": "/v1/chat/completions", "requests": rows(1)}),
            400,
            "endpoint and model are required and must appear before requests in the request body",
        ),
        (
            orjson.dumps({"endpoint": "/v1/completions", "model": MODEL, "requests": rows(1)}),
            400,
            "endpoint must be one of",
        ),
        (submit_body(rows(1), model="deepseek/deepseek-r1"), 400,
         "Model 'deepseek/deepseek-r1' does not have a :batch endpoint."),
        (submit_body(rows(1), model="no/such-model"), 400, "does not have a :batch endpoint."),
        (submit_body(rows(1), model=MODEL + ":online"), 422, "not supported in batch"),
        (
            submit_body(rows(1), provider={"only": ["amazon-bedrock"]}),
            404,
            f"Model '{MODEL}' does not have an eligible :batch endpoint matching provider.only: "
            "amazon-bedrock.",
        ),
        (submit_body(rows(4)), 413, "at most 3 requests"),
        (submit_body([{"custom_id": LONG * 40, "body": chat("big")}]), 413, "byte limit"),
        (submit_body([{"body": chat("x")}]), 400, "custom_id is required on requests[0]."),
        (submit_body([{"custom_id": 7, "body": chat("x")}]), 400, "custom_id: Invalid input"),
        (
            submit_body([{"custom_id": "a", "body": chat("x")}, {"custom_id": "a", "body": chat("y")}]),
            422,
            "Request at line 2 has a duplicate custom_id 'a'",
        ),
        (
            submit_body([{"custom_id": "a", "body": chat("x", model="openai/gpt-4o")}]),
            400,
            "does not match the batch-level model",
        ),
        (submit_body([]), 400, "requests must be a non-empty array."),
        (submit_body(rows(1), completion_window="48h"), 400, "completion_window must be '24h'."),
        (submit_body([{"custom_id": "a", "body": chat("x", max_tokens=9_000_000)}]), 402,
         "Insufficient credits"),
    ],
)
def test_openrouter_sync_checks_refuse_before_anything_is_created(
    sim_factory: Callable[..., SimServer], body: bytes, status: int, message: str
) -> None:
    server = sim_factory(**FAST, batch_max_requests=3, batch_max_bytes=2_000, credits_usd=1.0)
    ans = call(server.base_url, body, path="/batches")
    assert ans.status == status, ans.raw
    assert set(ans.json()) == {"error"}
    assert ans.json()["error"]["code"] == status
    assert message in ans.json()["error"]["message"]
    assert call(server.root_url, None, path="/_sim/batches", method="GET").json()["batches"] == []


def test_openrouter_keys_after_requests_are_not_part_of_the_envelope(fast: SimServer) -> None:
    # provider.only after `requests` is ignored (the stream parser fixed the envelope already).
    body = submit_body(rows(1))[:-1] + b',"provider":{"only":["amazon-bedrock"]}}'
    ans = call(fast.base_url, body, path="/batches")
    assert ans.status == 202 and ans.json()["provider"] == "OpenAI"


def test_openrouter_batch_routes_need_a_key(fast: SimServer) -> None:
    ans = call(fast.base_url, submit_body(rows(1)), path="/batches", key=None)
    assert ans.status == 401 and ans.json()["error"]["code"] == 401


def test_beta_prefix_serves_the_same_batches(fast: SimServer) -> None:
    batch_id = call(fast.base_url, submit_body(rows(1)), path="/batches").json()["id"]
    beta = call(fast.root_url, None, path=f"/api/beta/batches/{batch_id}", method="GET")
    assert beta.status == 200 and beta.json()["id"] == batch_id


# -- OpenRouter: the second stage ---------------------------------------------------------------

IMAGE_B64 = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


@pytest.mark.parametrize(
    ("bad", "model", "message"),
    [
        (chat("x", stream=True), MODEL,
         "Batch request 'bad' sets stream: true. Batch requests do not support stream: true."),
        (chat("x", max_tokens=0), MODEL,
         "Batch request 'bad' sets 'max_tokens' below 1; each batched request must allow at least 1 "
         "output token."),
        ({"messages": []}, MODEL, "Batch request 'bad' has no messages"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "see"}, IMAGE_B64]}]},
            MODEL,
            "Batch request 'bad' contains unsupported 'image_url' content. Only public http(s) image URLs "
            "are supported in batch",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA"}}]}]},
            MODEL,
            "Batch request 'bad' contains unsupported 'input_audio' content.",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_data": "AAAA"}}]}]},
            MODEL,
            "Batch request 'bad' contains unsupported 'file' content.",
        ),
        (chat("x", response_format={"type": "json_object"}), "google/gemini-2.0-flash-lite-001",
         "Batch request 'bad' uses a different response_format from the first request"),
    ],
)
def test_openrouter_second_stage_fails_the_whole_batch_and_bills_nothing(
    fast: SimServer, bad: dict[str, Any], model: str, message: str
) -> None:
    requests = [*rows(2), {"custom_id": "bad", "body": bad}, *rows(2, prefix="s")]
    ans = call(fast.base_url, submit_body(requests, model=model), path="/batches")
    assert ans.status == 202, ans.raw
    doc = finished(fast, ans.json()["id"])
    assert doc["status"] == "failed"
    assert doc["request_counts"] == {"total": 5, "completed": 0, "failed": 5}
    assert doc["results"] is None and doc["usage"] is None and doc["finalized_at"] is not None
    assert doc["error"]["message"].startswith(message)
    assert ledger(fast)["counts"]["batch_rows_billed"] == 0


def test_openrouter_public_image_urls_pass_the_second_stage(fast: SimServer) -> None:
    part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "cat?"}, part]}]}
    ans = call(fast.base_url, submit_body([{"custom_id": "img", "body": body}]), path="/batches")
    assert finished(fast, ans.json()["id"])["status"] == "completed"


# -- OpenRouter: row faults, expiry, 402 on read --------------------------------------------------


def test_openrouter_row_markers_fail_rows_in_both_shapes_and_only_successes_are_billed(
    fast: SimServer,
) -> None:
    requests = [
        {"custom_id": "ok0", "body": chat("fine")},
        {"custom_id": "rl", "body": chat("[[sim:429]] busy")},
        {"custom_id": "five", "body": chat("[[sim:500]] broken")},
        {"custom_id": "slow", "body": chat("[[sim:timeout]] slow")},
        {"custom_id": "four", "body": chat("[[sim:row400]] refused")},
        {"custom_id": "ok1", "body": chat("also fine")},
    ]
    batch_id = call(fast.base_url, submit_body(requests), path="/batches").json()["id"]
    doc = finished(fast, batch_id)
    assert doc["status"] == "completed" and doc["error"] is None
    assert doc["request_counts"] == {"total": 6, "completed": 2, "failed": 4}
    by_id = {r["custom_id"]: r for r in doc["results"]}
    assert [r["custom_id"] for r in doc["results"]][:2] == ["ok0", "ok1"]  # successes first
    assert by_id["rl"]["response"] is None and by_id["rl"]["error"]["error_type"] == "rate_limit_exceeded"
    assert by_id["five"]["error"]["error_type"] == "server"
    assert by_id["slow"]["error"]["error_type"] == "timeout"
    four = by_id["four"]
    assert four["error"] is None and four["response"]["status_code"] == 400
    assert four["response"]["body"]["error"]["type"] == "invalid_request_error"
    billed = ledger(fast)["billed_by_batch"][batch_id]
    assert billed["rows"] == 2 and billed["billed_usd"] == pytest.approx(doc["usage"]["cost"])


def test_openrouter_marker_with_a_count_fails_only_the_first_attempts(fast: SimServer) -> None:
    requests = [{"custom_id": "a", "body": chat("[[sim:500*1]] flaky")}]
    first = finished(fast, call(fast.base_url, submit_body(requests), path="/batches").json()["id"])
    second = finished(fast, call(fast.base_url, submit_body(requests), path="/batches").json()["id"])
    assert first["request_counts"]["failed"] == 1
    assert first["error"]["message"] == (
        "All 1 request(s) in this batch failed upstream; inspect each result's error field."
    )
    assert first["usage"]["cost"] == 0
    assert second["request_counts"] == {"total": 1, "completed": 1, "failed": 0}


def test_openrouter_row_fault_rate_is_seeded(sim_factory: Callable[..., SimServer]) -> None:
    outcomes = []
    for _ in range(2):
        server = sim_factory(**FAST, batch_row_faults={"500": 0.3, "429": 0.2}, seed=7)
        batch_id = call(server.base_url, submit_body(rows(40)), path="/batches").json()["id"]
        doc = finished(server, batch_id)
        outcomes.append(sorted(r["custom_id"] for r in doc["results"] if r["error"]))
    assert outcomes[0] == outcomes[1] and 5 < len(outcomes[0]) < 35


def test_openrouter_expiry_serves_the_rows_that_ran_and_bills_only_them(
    sim_factory: Callable[..., SimServer],
) -> None:
    # Rows finish evenly over [0.05, 0.45], one each 0.04 s; the window closes at 0.27: 5 of 10 ran.
    server = sim_factory(**{**FAST, "batch_processing_s": 0.45, "batch_expiry_s": 0.27})
    batch_id = call(server.base_url, submit_body(rows(10)), path="/batches").json()["id"]
    doc = finished(server, batch_id)
    assert doc["status"] == "expired"
    assert [r["custom_id"] for r in doc["results"]] == [f"r{i}" for i in range(5)]
    assert doc["request_counts"] == {"total": 10, "completed": 5, "failed": 0}
    assert ledger(server)["billed_by_batch"][batch_id]["rows"] == 5
    assert doc["usage"]["cost"] == pytest.approx(ledger(server)["counts"]["batch_billed_usd"])


def test_openrouter_expire_marker_stops_the_batch_at_that_row(fast: SimServer) -> None:
    requests = [*rows(2), {"custom_id": "stop", "body": chat("[[sim:expire*1]] here")}, *rows(2, "s")]
    doc = finished(fast, call(fast.base_url, submit_body(requests), path="/batches").json()["id"])
    assert doc["status"] == "expired"
    assert [r["custom_id"] for r in doc["results"]] == ["r0", "r1"]
    again = finished(fast, call(fast.base_url, submit_body(requests[2:]), path="/batches").json()["id"])
    assert again["status"] == "completed" and again["request_counts"]["completed"] == 3


def test_openrouter_402_on_read_until_a_top_up_then_billed_once(fast: SimServer) -> None:
    batch_id = call(fast.base_url, submit_body(rows(3)), path="/batches").json()["id"]
    call(fast.root_url, {"credits_usd": 1e-9}, path="/_sim/balance")

    def unpaid() -> Answer | None:
        ans = get(fast, f"/batches/{batch_id}")
        return ans if ans.status == 402 else None

    ans = wait_for(unpaid)
    doc = ans.json()
    assert doc["id"] == batch_id and doc["status"] == "completed" and doc["results"] is None
    assert doc["error"]["code"] == 402
    assert get(fast, f"/batches/{batch_id}/results").status == 402
    assert call(fast.base_url, None, path=f"/batches/{batch_id}", method="DELETE").status == 409
    assert ledger(fast)["counts"]["batch_rows_billed"] == 0
    call(fast.root_url, {"credits_usd": 5.0}, path="/_sim/balance")
    paid = get(fast, f"/batches/{batch_id}")
    assert paid.status == 200 and len(paid.json()["results"]) == 3
    assert ledger(fast)["billed_by_batch"][batch_id]["rows"] == 3
    get(fast, f"/batches/{batch_id}")
    assert ledger(fast)["counts"]["batch_rows_billed"] == 3


# -- OpenRouter: visibility lag, list cache, filters, route faults ----------------------------------


def test_openrouter_visibility_lag_and_list_cache(sim_factory: Callable[..., SimServer]) -> None:
    server = sim_factory(**{**FAST, "batch_visibility_s": 0.4, "batch_list_cache_s": 0.6})
    t0 = time.monotonic()
    batch_id = call(server.base_url, submit_body(rows(1)), path="/batches").json()["id"]
    early = get(server, f"/batches/{batch_id}")
    listed_early = get(server, "/batches?limit=5")
    if time.monotonic() - t0 < 0.4:  # only meaningful if the machine was quick enough
        assert early.status == 404
        assert early.json()["error"]["message"] == f"Batch job {batch_id} not found."
        assert listed_early.json()["data"] == []
    wait_for(lambda: get(server, f"/batches/{batch_id}").status == 200)
    # A fresh query string sees it at once; the cached one only once its cache time is over.
    assert get(server, "/batches?limit=6").json()["first_id"] == batch_id
    if time.monotonic() - t0 < 0.6:
        assert get(server, "/batches?limit=5").json()["data"] == []
    wait_for(lambda: get(server, "/batches?limit=5").json()["first_id"] == batch_id)


def test_openrouter_first_batch_can_have_a_long_lag(sim_factory: Callable[..., SimServer]) -> None:
    server = sim_factory(**{**FAST, "batch_first_visibility_s": 30.0})
    first = call(server.base_url, submit_body(rows(1)), path="/batches").json()["id"]
    second = call(server.base_url, submit_body(rows(1)), path="/batches").json()["id"]
    assert get(server, f"/batches/{second}").status == 200
    assert get(server, f"/batches/{first}").status == 404
    assert [b["id"] for b in get(server, "/batches").json()["data"]] == [second]


def test_openrouter_list_pages_with_after_and_filters(fast: SimServer) -> None:
    ids = [call(fast.base_url, submit_body(rows(1)), path="/batches").json()["id"] for _ in range(5)]
    bad = call(fast.base_url, submit_body([{"custom_id": "x", "body": chat("x", stream=True)}]), path="/batches")
    finished(fast, bad.json()["id"])
    for batch_id in ids:
        finished(fast, batch_id)
    newest_first = [bad.json()["id"], *reversed(ids)]
    got: list[str] = []
    after = ""
    while True:
        page = get(fast, f"/batches?limit=2{after}").json()
        got += [b["id"] for b in page["data"]]
        if not page["has_more"]:
            break
        after = f"&after={page['last_id']}"
    assert got == newest_first
    failed = get(fast, "/batches?status=failed").json()["data"]
    assert [b["id"] for b in failed] == [bad.json()["id"]]
    both = get(fast, "/batches?status=failed&status=completed").json()["data"]
    assert len(both) == 6
    future = int(time.time()) + 3600
    assert get(fast, f"/batches?created_after={future}").json()["data"] == []
    assert len(get(fast, "/batches?created_after=2020-01-01T00:00:00Z").json()["data"]) == 6
    for query in ("limit=0", "limit=101", "status=finalizing", "created_after=soon", "after=batch-x"):
        ans = get(fast, f"/batches?{query}")
        assert (ans.status, ans.json()["error"]["message"]) == (400, "Invalid batch list query.")


def test_openrouter_delete_of_an_unfinished_batch_is_409(sim_factory: Callable[..., SimServer]) -> None:
    server = sim_factory(**{**FAST, "batch_processing_s": 30.0})
    batch_id = call(server.base_url, submit_body(rows(1)), path="/batches").json()["id"]
    ans = call(server.base_url, None, path=f"/batches/{batch_id}", method="DELETE")
    assert ans.status == 409 and "Only completed, failed, expired, or cancelled" in ans.json()["error"]["message"]
    assert get(server, f"/batches/{batch_id}/results").status == 409
    assert get(server, f"/batches/{batch_id}").json()["status"] in ("validating", "in_progress")


def test_openrouter_results_cursor_and_limit_are_checked(fast: SimServer) -> None:
    batch_id = call(fast.base_url, submit_body(rows(2)), path="/batches").json()["id"]
    finished(fast, batch_id)
    for query in ("limit=0", "limit=1001", "cursor=bm9wZQ"):
        assert get(fast, f"/batches/{batch_id}/results?{query}").status == 400


def test_openrouter_route_429_has_retry_after_and_creates_nothing(fast: SimServer) -> None:
    ans = call(fast.base_url, submit_body(rows(1)), path="/batches", fault="429")
    assert ans.status == 429 and ans.headers["Retry-After"] == "0.05"
    assert ans.json()["error"] == {"message": "Batch API rate limit exceeded for the billable entity.", "code": 429}
    assert call(fast.root_url, None, path="/_sim/batches", method="GET").json()["batches"] == []


def test_openrouter_lost_reply_persists_the_batch(sim_factory: Callable[..., SimServer]) -> None:
    server = sim_factory(**FAST, batch_lost_replies=1)
    import aiohttp

    with pytest.raises(aiohttp.ClientError):
        call(server.base_url, submit_body(rows(2)), path="/batches")
    (lost,) = call(server.root_url, None, path="/_sim/batches", method="GET").json()["batches"]
    assert lost["custom_ids"] == ["r0", "r1"]
    found = wait_for(lambda: get(server, "/batches").json()["data"])
    assert found[0]["id"] == lost["id"] and found[0]["request_counts"]["total"] == 2
    assert call(server.base_url, submit_body(rows(1)), path="/batches").status == 202


def test_catalog_lists_batch_variants_at_half_price(fast: SimServer) -> None:
    models = {m["id"]: m for m in get(fast, "/models").json()["data"]}
    for slug in ("google/gemini-2.0-flash-lite-001", "openai/gpt-4o-mini"):
        sync, batch = models[slug]["pricing"], models[slug + ":batch"]["pricing"]
        for key in ("prompt", "completion"):
            assert float(batch[key]) == pytest.approx(float(sync[key]) / 2)
    assert "deepseek/deepseek-r1" in models and "deepseek/deepseek-r1:batch" not in models


def test_plain_dialect_and_batch_api_off_have_no_batch_routes(
    sim_factory: Callable[..., SimServer],
) -> None:
    for server in (sim_factory(dialect="plain"), sim_factory(batch_api=False)):
        assert call(server.base_url, submit_body(rows(1)), path="/batches").status == 404


def test_sim_flags_set_the_batch_knobs() -> None:
    from batchrun.sim.__main__ import config_from_args

    config = config_from_args([
        "--batch-processing", "0.2", "--batch-visibility", "0.1", "--batch-first-visibility", "9",
        "--batch-list-cache", "0", "--batch-expiry", "5", "--batch-row-fault", "500=0.1",
        "--batch-row-fault", "timeout=0.05", "--batch-fault", "429=0.2", "--batch-lost-replies", "2",
        "--batch-max-requests", "10", "--batch-token-limit", "99", "--no-batch-api",
    ])
    assert (config.batch_processing_s, config.batch_visibility_s) == (0.2, 0.1)
    assert (config.batch_first_visibility_s, config.batch_list_cache_s, config.batch_expiry_s) == (9, 0, 5)
    assert config.batch_row_faults == {"500": 0.1, "timeout": 0.05}
    assert config.batch_faults == {"429": 0.2}
    assert (config.batch_lost_replies, config.batch_max_requests) == (2, 10)
    assert config.batch_enqueued_token_limit == 99 and config.batch_api is False
    with pytest.raises(SystemExit):
        config_from_args(["--batch-row-fault", "418=0.1"])


# -- OpenAI: files, batches, output and error files ------------------------------------------------


def oai_line(cid: str, text: str, *, model: str = MODEL, url: str = "/v1/chat/completions",
             **body: Any) -> dict[str, Any]:
    return {"custom_id": cid, "method": "POST", "url": url, "body": {"model": model, **chat(text), **body}}


def upload(server: SimServer, lines: list[Any], *, purpose: str = "batch", name: str = "in.jsonl") -> Answer:
    import asyncio

    import aiohttp

    content = b"".join((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines)

    async def send() -> Answer:
        form = aiohttp.FormData()
        form.add_field("purpose", purpose)
        form.add_field("file", content, filename=name, content_type="application/jsonl")
        async with aiohttp.ClientSession() as session, session.post(
            server.base_url + "/files", data=form, headers={"Authorization": "Bearer sk-test"}
        ) as resp:
            return Answer(resp.status, dict(resp.headers), await resp.read())

    return asyncio.run(send())


def oai_create(server: SimServer, file_id: str, **extra: Any) -> Answer:
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **extra}
    return call(server.base_url, body, path="/batches")


def oai_finished(server: SimServer, batch_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        doc = get(server, f"/batches/{batch_id}").json()
        return doc if doc["status"] in ("completed", "failed", "expired", "cancelled") else None

    return wait_for(done)


def content(server: SimServer, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    raw = get(server, f"/files/{file_id}/content").raw
    return [orjson.loads(line) for line in raw.splitlines()]


@pytest.fixture
def oai(sim_factory: Callable[..., SimServer]) -> SimServer:
    return sim_factory(**FAST, dialect="openai")


def test_openai_flow_files_batch_output_and_billing(oai: SimServer) -> None:
    lines = [oai_line(f"c{i}", f"Say something about item {i}.") for i in range(4)]
    lines.append(oai_line("bad", "[[sim:row400]] refused"))
    up = upload(oai, lines, name="nonce-1.jsonl")
    assert up.status == 200
    meta = up.json()
    assert meta["object"] == "file" and meta["purpose"] == "batch" and meta["status"] == "processed"
    assert meta["filename"] == "nonce-1.jsonl" and meta["expires_at"] > meta["created_at"]
    assert get(oai, f"/files/{meta['id']}").json() == meta
    created = oai_create(oai, meta["id"], metadata={"client_submission_id": "nonce-1"})
    assert created.status == 200
    doc = created.json()
    assert doc["status"] == "validating" and doc["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert doc["metadata"] == {"client_submission_id": "nonce-1"}
    assert doc["id"].startswith("batch_") and doc["output_file_id"] is None
    done = oai_finished(oai, doc["id"])
    assert done["status"] == "completed" and done["model"] == MODEL
    assert done["request_counts"] == {"total": 5, "completed": 4, "failed": 1}
    assert done["completed_at"] and done["finalizing_at"] and done["in_progress_at"]
    out, err = content(oai, done["output_file_id"]), content(oai, done["error_file_id"])
    assert sorted(r["custom_id"] for r in out) == [f"c{i}" for i in range(4)]
    for row in out:
        assert row["error"] is None and row["response"]["status_code"] == 200
        assert "cost" not in row["response"]["body"]["usage"]
    (bad,) = err
    assert bad["custom_id"] == "bad" and bad["error"] is None
    assert bad["response"]["status_code"] == 400 and bad["response"]["body"]["error"]["type"] == "invalid_request_error"
    usage = done["usage"]
    assert usage["input_tokens"] == sum(r["response"]["body"]["usage"]["prompt_tokens"] for r in out)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    book = ledger(oai)
    assert book["billed_by_batch"][done["id"]]["rows"] == 4
    expected = usage["input_tokens"] * 0.075e-6 + usage["output_tokens"] * 0.30e-6  # half of 0.15/0.60
    assert book["counts"]["batch_billed_usd"] == pytest.approx(expected)
    # Reconciliation hooks: file list by purpose, newest first; batch list with metadata.
    files = get(oai, "/files?purpose=batch&order=desc").json()["data"]
    assert [f["filename"] for f in files] == ["nonce-1.jsonl"]
    outputs = get(oai, "/files?purpose=batch_output").json()["data"]
    assert {f["id"] for f in outputs} == {done["output_file_id"], done["error_file_id"]}
    listed = get(oai, "/batches?limit=10").json()
    assert listed["data"][0]["metadata"] == {"client_submission_id": "nonce-1"}
    deleted = call(oai.base_url, None, path=f"/files/{meta['id']}", method="DELETE")
    assert deleted.json() == {"id": meta["id"], "object": "file", "deleted": True}
    assert get(oai, f"/files/{meta['id']}").status == 404


@pytest.mark.parametrize(
    ("lines", "code", "line"),
    [
        ([oai_line("a", "x"), b"{not json"], "invalid_json_line", 2),
        ([oai_line("a", "x"), {"method": "POST", "url": "/v1/chat/completions", "body": {}}],
         "missing_required_parameter", 2),
        ([oai_line("a", "x"), oai_line("a", "y")], "duplicate_custom_id", 2),
        ([oai_line("a", "x"), oai_line("b", "y", model="openai/gpt-4o-mini:batch")], "mismatched_model", 2),
        ([oai_line("a", "x", url="/v1/embeddings")], "invalid_url", 1),
        ([oai_line("a", "x", model="deepseek/deepseek-r1")], "model_not_found", 1),
        ([oai_line("a", "x", stream=True)], "streaming_unsupported", 1),
    ],
)
def test_openai_validation_fails_the_whole_batch_at_the_first_bad_line(
    oai: SimServer, lines: list[Any], code: str, line: int
) -> None:
    file_id = upload(oai, lines).json()["id"]
    done = oai_finished(oai, oai_create(oai, file_id).json()["id"])
    assert done["status"] == "failed" and done["failed_at"]
    assert done["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    (error,) = done["errors"]["data"]
    assert (error["code"], error["line"]) == (code, line)
    assert done["output_file_id"] is None and done["error_file_id"] is None
    assert ledger(oai)["counts"]["batch_rows_billed"] == 0


def test_openai_wrong_purpose_and_unknown_file_fail_asynchronously(oai: SimServer) -> None:
    other = upload(oai, [oai_line("a", "x")], purpose="user_data").json()["id"]
    for file_id in (other, "file-nope"):
        done = oai_finished(oai, oai_create(oai, file_id).json()["id"])
        assert done["status"] == "failed"
        assert done["errors"]["data"][0]["code"] == "invalid_request"


def test_openai_sync_refusals(oai: SimServer) -> None:
    file_id = upload(oai, [oai_line("a", "x")]).json()["id"]
    assert oai_create(oai, file_id, completion_window="1h").status == 400
    assert oai_create(oai, file_id, endpoint="/v1/nope").status == 400
    assert oai_create(oai, file_id, metadata={f"k{i}": "v" for i in range(17)}).status == 400
    assert call(oai.base_url, {"endpoint": "/v1/chat/completions"}, path="/batches").status == 400
    assert upload(oai, [oai_line("a", "x")], purpose="nonsense").status == 400
    missing = get(oai, "/batches/batch_nope")
    assert missing.status == 404 and missing.json()["error"]["message"] == "No batch found with id 'batch_nope'."


def test_openai_expiry_keeps_partial_output_and_marks_the_rest_batch_expired(
    sim_factory: Callable[..., SimServer],
) -> None:
    # Rows run evenly over [0.05, 0.41], one each 0.036 s (the last tenth is finalizing); the
    # window closes at 0.245: 5 of 10 ran.
    server = sim_factory(**{**FAST, "batch_processing_s": 0.45, "batch_expiry_s": 0.245}, dialect="openai")
    file_id = upload(server, [oai_line(f"c{i}", f"item {i}") for i in range(10)]).json()["id"]
    done = oai_finished(server, oai_create(server, file_id).json()["id"])
    assert done["status"] == "expired" and done["expired_at"]
    out, err = content(server, done["output_file_id"]), content(server, done["error_file_id"])
    assert len(out) == 5 and len(err) == 5
    assert {r["error"]["code"] for r in err} == {"batch_expired"} and all(r["response"] is None for r in err)
    assert ledger(server)["billed_by_batch"][done["id"]]["rows"] == 5


def test_openai_cancel_goes_through_cancelling(sim_factory: Callable[..., SimServer]) -> None:
    server = sim_factory(**{**FAST, "batch_processing_s": 30.0, "batch_cancel_s": 0.1}, dialect="openai")
    file_id = upload(server, [oai_line(f"c{i}", f"item {i}") for i in range(3)]).json()["id"]
    batch_id = oai_create(server, file_id).json()["id"]
    ans = call(server.base_url, None, path=f"/batches/{batch_id}/cancel")
    assert ans.status == 200 and ans.json()["status"] == "cancelling" and ans.json()["cancelling_at"]
    done = oai_finished(server, batch_id)
    assert done["status"] == "cancelled" and done["cancelled_at"]
    assert done["output_file_id"] is None
    assert {r["error"]["code"] for r in content(server, done["error_file_id"])} == {"batch_cancelled"}
    again = call(server.base_url, None, path=f"/batches/{batch_id}/cancel")
    assert again.status == 400
    assert ledger(server)["counts"]["batch_rows_billed"] == 0


def test_openai_all_failed_has_only_an_error_file(oai: SimServer) -> None:
    file_id = upload(oai, [oai_line("a", "[[sim:500]] x"), oai_line("b", "[[sim:timeout]] y")]).json()["id"]
    done = oai_finished(oai, oai_create(oai, file_id).json()["id"])
    assert done["status"] == "completed" and done["output_file_id"] is None
    err = {r["custom_id"]: r for r in content(oai, done["error_file_id"])}
    assert err["a"]["response"]["status_code"] == 500
    assert err["b"]["response"] is None and err["b"]["error"]["code"] == "request_timeout"


def test_openai_enqueued_token_limit(sim_factory: Callable[..., SimServer]) -> None:
    server = sim_factory(**FAST, dialect="openai", batch_enqueued_token_limit=5)
    file_id = upload(server, [oai_line("a", "a prompt well over five tokens long")]).json()["id"]
    done = oai_finished(server, oai_create(server, file_id).json()["id"])
    assert done["status"] == "failed" and done["errors"]["data"][0]["code"] == "token_limit_exceeded"


def test_openai_list_pages_newest_first(oai: SimServer) -> None:
    file_id = upload(oai, [oai_line("a", "x")]).json()["id"]
    ids = [oai_create(oai, file_id).json()["id"] for _ in range(3)]
    first = get(oai, "/batches?limit=2").json()
    assert [b["id"] for b in first["data"]] == ids[::-1][:2] and first["has_more"]
    rest = get(oai, f"/batches?limit=2&after={first['last_id']}").json()
    assert [b["id"] for b in rest["data"]] == [ids[0]] and not rest["has_more"]


def test_openrouter_counts_rise_while_in_progress_and_sim_batches_shows_state(
    sim_factory: Callable[..., SimServer],
) -> None:
    server = sim_factory(**{**FAST, "batch_processing_s": 1.5})
    batch_id = call(server.base_url, submit_body(rows(20)), path="/batches").json()["id"]
    seen: list[int] = []

    def progressed() -> bool:
        doc = get(server, f"/batches/{batch_id}").json()
        seen.append(doc["request_counts"]["completed"])
        return doc["status"] == "completed"

    wait_for(progressed)
    assert seen == sorted(seen) and seen[-1] == 20
    assert len(set(seen)) > 2  # it rose in steps, not all at once
    (state,) = call(server.root_url, None, path="/_sim/batches", method="GET").json()["batches"]
    assert server.batches.snapshot() == [state]
    assert state["id"] == batch_id and state["status"] == "completed" and state["paid"] is True
    assert state["rows_run"] == 20 and state["cost"] == pytest.approx(ledger(server)["counts"]["batch_billed_usd"])


def test_openrouter_drop_header_creates_the_batch_but_loses_the_reply(fast: SimServer) -> None:
    import aiohttp

    with pytest.raises(aiohttp.ClientError):
        call(fast.base_url, submit_body(rows(1)), path="/batches", fault="drop")
    assert len(call(fast.root_url, None, path="/_sim/batches", method="GET").json()["batches"]) == 1


def test_reset_forgets_batches(fast: SimServer) -> None:
    batch_id = call(fast.base_url, submit_body(rows(1)), path="/batches").json()["id"]
    finished(fast, batch_id)
    call(fast.root_url, None, path="/_sim/reset")
    assert get(fast, f"/batches/{batch_id}").status == 404
    assert ledger(fast)["counts"]["batch_rows_billed"] == 0


def test_a_simulator_process_serves_batches_with_its_flags() -> None:
    from batchrun.sim import SimProcess

    args = ["--batch-processing", "0.2", "--batch-validating", "0.02", "--batch-visibility", "0",
            "--batch-list-cache", "0", "--batch-row-fault", "500=1"]
    with SimProcess(args) as proc:
        ans = call(proc.base_url, submit_body(rows(3)), path="/batches")
        assert ans.status == 202
        batch_id = ans.json()["id"]

        def done() -> dict[str, Any] | None:
            doc = call(proc.base_url, None, path=f"/batches/{batch_id}", method="GET").json()
            return doc if doc.get("status") == "completed" else None

        doc = wait_for(done)
        assert doc["request_counts"] == {"total": 3, "completed": 0, "failed": 3}
        assert proc.ledger_json()["counts"]["batch_rows_billed"] == 0


def test_batchrun_sim_refuses_a_bad_batch_flag_in_one_line() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "batchrun", "sim", "--port", "0", "--batch-fault", "404=0.1"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "--batch-fault" in done.stderr and "Traceback" not in done.stderr
