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
