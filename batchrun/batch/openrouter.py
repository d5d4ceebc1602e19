"""OpenRouter's Batch API on the wire: submit inline, get, list, results pages, delete.

Routes and rules are docs/batch-wire.md Part A: ``POST /batches`` with ``endpoint`` and ``model``
before ``requests`` (202), ``GET /batches/{id}`` (402 while its cost is above the balance),
``GET /batches?created_after=`` (newest first, paged by ``after``), ``GET /batches/{id}/results``
(``limit``/``cursor``; inline ``results`` on GET where that route is missing), ``DELETE``.
No idempotency key and no metadata: a lost reply is found again by listing (see ``candidates``)
and proven by the nonce in the results' custom_ids.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from batchrun.batch.info import ApiReply, BatchInfo
from batchrun.batch.journal import Submission
from batchrun.batch.plan import OPENROUTER_LIMITS, openrouter_item, openrouter_payload, wire_id

__all__ = ["CLOCK_SKEW_S", "BatchApiError", "OpenRouterBatches", "Send"]

CLOCK_SKEW_S = 120.0  # our clock against the provider's, when listing batches made after t0
_PAGE = 1000
_LIST_PAGE = 100

Send = Callable[..., Awaitable[ApiReply]]


class BatchApiError(Exception):
    """A Batch API route answered with an error the caller has to decide about."""

    def __init__(self, what: str, reply: ApiReply) -> None:
        super().__init__(f"{what}: HTTP {reply.status}")
        self.what = what
        self.reply = reply


class OpenRouterBatches:
    """The client side of OpenRouter's Batch API, over a ``send`` that retries idempotent calls."""

    api = "openrouter"
    limits = OPENROUTER_LIMITS
    keeps_model_in_body = False  # the documented examples send the model once, at the top

    def __init__(self, send: Send) -> None:
        self._send = send

    async def probe(self) -> ApiReply:
        """``GET /batches?limit=1``: 404 means this server has no Batch API."""
        return await self._send("GET", "/batches", params={"limit": 1})

    async def submit(
        self, sub: Submission, bodies: list[bytes], on_uploaded: Callable[[str], None]
    ) -> ApiReply:
        """POST the batch once (never retried here: a lost reply is for recovery to settle)."""
        items = [openrouter_item(wire_id(sub.nonce, index), body) for index, body in enumerate(bodies)]
        return await self._send(
            "POST", "/batches", data=openrouter_payload(sub.model, items), retry=False,
        )

    async def get(self, batch_id: str) -> ApiReply:
        return await self._send("GET", f"/batches/{batch_id}")

    async def candidates(self, sub: Submission, claimed: Iterable[str]) -> list[BatchInfo]:
        """Batches made since the submission's t0 (minus skew) that could be it, oldest first.

        A match has the submission's model, endpoint and request count; batches already
        claimed by another journal entry, or proven not to be this one, are left out.
        """
        exclude = set(claimed) | set(sub.disowned)
        found: list[BatchInfo] = []
        params: dict[str, Any] = {"limit": _LIST_PAGE, "created_after": int(sub.t0 - CLOCK_SKEW_S)}
        while True:
            reply = await self._send("GET", "/batches", params=params)
            if not reply.ok or not isinstance(reply.body, dict):
                raise BatchApiError("listing batches", reply)
            data = reply.body.get("data")
            for item in data if isinstance(data, list) else ():
                if not isinstance(item, dict):
                    continue
                info = BatchInfo.from_json(item)
                if info.id in exclude or info.model != sub.model or info.endpoint != sub.endpoint:
                    continue
                # total is 0 on OpenAI while validating; OpenRouter sets it at once (A3.8).
                if info.total == sub.count:
                    found.append(info)
            last = reply.body.get("last_id")
            if not reply.body.get("has_more") or not isinstance(last, str):
                break
            params = {**params, "after": last}
        return sorted(found, key=lambda info: (info.created_at, info.id))

    async def rows(self, info: BatchInfo) -> list[dict[str, Any]]:
        """Every result row of a finished batch: the results pages, else the inline results."""
        rows: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": _PAGE}
        while True:
            reply = await self._send("GET", f"/batches/{info.id}/results", params=params)
            if reply.status in (404, 405) and not rows:
                # No results route on this server (older API): the rows come inline with GET.
                return [row for row in info.results or () if isinstance(row, dict)]
            if not reply.ok or not isinstance(reply.body, dict):
                raise BatchApiError(f"reading the results of {info.id}", reply)
            data = reply.body.get("data")
            rows.extend(row for row in data if isinstance(row, dict)) if isinstance(data, list) else None
            cursor = reply.body.get("next_cursor")
            if not reply.body.get("has_more") or not isinstance(cursor, str) or not cursor:
                return rows
            params = {"limit": _PAGE, "cursor": cursor}

    async def discard(self, sub: Submission) -> None:
        """Nothing to clean up of a submission that made no batch: OpenRouter keeps no upload."""

    async def delete(self, sub: Submission, info: BatchInfo | None) -> bool:
        """Delete a finished batch and its stored prompts and results; True once it is gone."""
        reply = await self._send("DELETE", f"/batches/{sub.batch_id}")
        return reply.ok or reply.status == 404
