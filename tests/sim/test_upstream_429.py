"""The simulator's "429" fault in each header style OpenRouter sends, as batchrun reads it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from simclient import Answer, call, user

from batchrun.retry import classify_response
from batchrun.sim import SimConfig, SimServer
from batchrun.sim.__main__ import config_from_args


def _metadata(ans: Answer) -> dict[str, Any]:
    metadata: dict[str, Any] = ans.json()["error"]["metadata"]
    return metadata


def _reset_s(ans: Answer, value: str) -> float:
    """The reset (epoch milliseconds, as OpenRouter sends) minus the time the request was sent."""
    return int(value) / 1000 - ans.sent_at  # type: ignore[attr-defined]


def _send(base_url: str, text: str) -> Answer:
    sent_at = time.time()
    ans = call(base_url, user(text, max_tokens=4))
    ans.sent_at = sent_at  # type: ignore[attr-defined]
    ans.took = time.time() - sent_at  # type: ignore[attr-defined]
    return ans


def _check_reset(ans: Answer, value: str) -> None:
    # Retry-After (2 s) from the moment the simulator answered, rounded up to a millisecond.
    assert 2.0 <= _reset_s(ans, value) <= 2.0 + ans.took + 0.002  # type: ignore[attr-defined]


def _retry_after_only(ans: Answer) -> None:
    assert "X-RateLimit-Remaining" not in ans.headers and "headers" not in _metadata(ans)


def _in_headers(ans: Answer) -> None:
    assert ans.headers["X-RateLimit-Remaining"] == "0" and ans.headers["X-RateLimit-Limit"]
    _check_reset(ans, ans.headers["X-RateLimit-Reset"])
    assert "headers" not in _metadata(ans)


def _in_metadata(ans: Answer) -> None:
    assert "X-RateLimit-Remaining" not in ans.headers
    inner = _metadata(ans)["headers"]
    assert inner["X-RateLimit-Remaining"] == "0" and inner["Retry-After"] == "2"
    _check_reset(ans, inner["X-RateLimit-Reset"])


@pytest.mark.parametrize(
    ("style", "check"),
    [("retry-after", _retry_after_only), ("ratelimit", _in_headers), ("metadata", _in_metadata)],
)
def test_each_header_style_is_an_upstream_429_to_batchrun(
    style: str, check: Callable[[Answer], None]
) -> None:
    config = SimConfig(faults={"429": 1.0}, retry_after_s=2.0, upstream_429_headers=style)
    with SimServer(config) as sim:
        ans = _send(sim.base_url, "hello")
    assert ans.status == 429 and ans.headers["Retry-After"] == "2"
    assert _metadata(ans)["limit_source"] == "upstream_provider_shared_pool"
    check(ans)
    verdict = classify_response(ans.status, ans.headers, ans.raw, now=time.time())
    assert verdict.kind == "rate_limited" and verdict.retry_after == 2.0
    assert verdict.upstream and not verdict.over_limit


def test_mix_rotates_the_three_styles_and_restarts_on_reset() -> None:
    config = SimConfig(faults={"429": 1.0}, retry_after_s=2.0, upstream_429_headers="mix")
    with SimServer(config) as sim:
        seen = [_send(sim.base_url, f"line {i}") for i in range(4)]
        call(sim.base_url, path="/_sim/reset")
        after_reset = _send(sim.base_url, "again")
    for ans, check in zip(seen, [_retry_after_only, _in_headers, _in_metadata, _retry_after_only], strict=True):
        check(ans)
    _retry_after_only(after_reset)


def test_the_default_stays_retry_after_only_and_a_bad_style_is_refused() -> None:
    assert SimConfig().upstream_429_headers == "retry-after"
    assert config_from_args(["--upstream-429-headers", "mix"]).upstream_429_headers == "mix"
    with pytest.raises(ValueError, match="upstream_429_headers must be one of"):
        SimConfig(upstream_429_headers="sometimes")
