"""``stream: true`` through the real runner: SSE assembled into one body, mid-stream errors retried."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import job_file, read_jsonl, write_jsonl

from batchrun.config import load_config
from batchrun.runner import Runner


def test_streamed_replies_are_assembled_and_billed_like_the_simulator_says(tmp_path: Path, sim) -> None:
    rows = [
        {"custom_id": f"s{i}", "prompt": f"Tell me about item {i}.", "max_tokens": 32, "stream": True}
        for i in range(10)
    ]
    rows.append({"custom_id": "cut", "prompt": "[[sim:finish_error*1]] again", "max_tokens": 16, "stream": True})
    job = job_file(tmp_path, write_jsonl(tmp_path / "in.jsonl", rows), extra=f'base_url = "{sim.base_url}"')

    result = asyncio.run(Runner(load_config(job), api_key="k").run())

    assert result.exit_code == 0, result.message
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert len(records) == 11
    assert records["cut"]["attempts"] == 2
    for record in records.values():
        body = record["response"]["body"]
        assert body["choices"][0]["message"]["content"]
        entry = sim.ledger.by_gen_id(record["response"]["request_id"])
        assert entry is not None and entry.streamed
        assert record["usage"]["completion_tokens"] == entry.completion_tokens
        assert record["usage"]["cost_usd"] == entry.cost
