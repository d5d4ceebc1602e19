"""What both Batch API clients hand the runner: a batch's state and an HTTP reply, one shape for both."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

__all__ = ["TERMINAL", "ApiReply", "BatchInfo", "parse_reply"]

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


class ApiReply(NamedTuple):
    """One answer of a Batch API route: its status, headers, parsed JSON body (or text) and bytes."""

    status: int
    headers: Mapping[str, str]
    body: Any
    raw: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def parse_reply(status: int, headers: Mapping[str, str], raw: bytes) -> ApiReply:
    try:
        body: Any = orjson.loads(raw) if raw.strip()[:1] in (b"{", b"[") else raw.decode("utf-8", "replace")
    except orjson.JSONDecodeError:
        body = raw.decode("utf-8", "replace")
    return ApiReply(status, headers, body, raw)


@dataclass
class BatchInfo:
    """A batch as the provider reports it, in either provider's fields."""

    id: str
    status: str
    model: str | None = None
    endpoint: str | None = None
    created_at: float = 0.0
    total: int = 0
    completed: int = 0
    failed: int = 0
    cost_usd: float | None = None  # OpenRouter's usage.cost: what the batch was billed
    error_message: str = ""
    errors: list[dict[str, Any]] = field(default_factory=list)  # OpenAI errors.data
    results: list[Any] | None = None  # OpenRouter inline results
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def counts(self) -> dict[str, int]:
        return {"total": self.total, "completed": self.completed, "failed": self.failed}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchInfo:
        counts = data.get("request_counts")
        counts = counts if isinstance(counts, Mapping) else {}
        usage = data.get("usage")
        cost = usage.get("cost") if isinstance(usage, Mapping) else None
        error = data.get("error")
        errors = data.get("errors")
        error_list = errors.get("data") if isinstance(errors, Mapping) else None
        metadata = data.get("metadata")
        results = data.get("results")
        return cls(
            id=str(data.get("id")),
            status=str(data.get("status")),
            model=data.get("model") if isinstance(data.get("model"), str) else None,
            endpoint=data.get("endpoint") if isinstance(data.get("endpoint"), str) else None,
            created_at=float(data.get("created_at") or 0),
            total=int(counts.get("total") or 0),
            completed=int(counts.get("completed") or 0),
            failed=int(counts.get("failed") or 0),
            cost_usd=float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None,
            error_message=str(error.get("message") or "") if isinstance(error, Mapping) else "",
            errors=[e for e in error_list if isinstance(e, dict)] if isinstance(error_list, list) else [],
            results=results if isinstance(results, list) else None,
            input_file_id=data.get("input_file_id"),
            output_file_id=data.get("output_file_id"),
            error_file_id=data.get("error_file_id"),
            metadata=dict(metadata) if isinstance(metadata, Mapping) else {},
        )
