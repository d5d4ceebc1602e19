"""OpenAI Batch API lines run as written: the job's system prompt and [params] are not merged in.

Checked on the wire: the simulator's request log (``GET /_sim/requests``) holds every body it got.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import orjson
from conftest import job_file, read_jsonl, run_cli, write_jsonl

from batchrun.sim import SimServer

_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def logged_bodies(sim: SimServer) -> dict[str, dict[str, Any]]:
    """The chat bodies the simulator received, by the text of their last message."""
    with _LOOPBACK.open(sim.root_url + "/_sim/requests", timeout=10) as response:
        entries = orjson.loads(response.read())["requests"]
    return {
        e["body"]["messages"][-1]["content"]: e["body"]
        for e in entries if e["path"].endswith("/chat/completions")
    }


def batch_line(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def test_batch_lines_are_sent_as_written_and_only_a_missing_model_is_filled(tmp_path: Path, sim) -> None:
    written = {"model": "openai/gpt-4o-mini", "max_tokens": 12, "temperature": 1,
               "messages": [{"role": "user", "content": "as written"}]}
    no_model = {"messages": [{"role": "user", "content": "no model"}], "max_tokens": 5}
    own_list = {"models": ["openai/gpt-4o-mini", "google/gemini-2.0-flash-lite-001"],
                "messages": [{"role": "user", "content": "own models"}]}
    chat = {"custom_id": "c", "messages": [{"role": "user", "content": "chat line"}]}
    source = write_jsonl(tmp_path / "batch.jsonl", [
        batch_line("a", written), batch_line("b", no_model), batch_line("m", own_list), chat,
    ])
    job = job_file(tmp_path, source, extra=(
        f'base_url = "{sim.base_url}"\nsystem = "You are terse."\n'
        "[params]\ntemperature = 0\nmax_tokens = 40\nseed = 7\n"
    ))

    ran = run_cli("run", job, "--model", "deepseek/deepseek-r1", "--no-progress")
    assert ran.returncode == 0, ran.stderr

    bodies = logged_bodies(sim)
    assert bodies["as written"] == written
    assert bodies["no model"] == {**no_model, "model": "deepseek/deepseek-r1"}
    assert bodies["own models"] == {**own_list, "model": "openai/gpt-4o-mini"}  # its list, first
    # Other shapes still get the job's defaults and system prompt.
    assert bodies["chat line"] == {
        "model": "deepseek/deepseek-r1", "temperature": 0, "max_tokens": 40, "seed": 7,
        "messages": [{"role": "system", "content": "You are terse."}, chat["messages"][0]],
    }
    assert {r["custom_id"] for r in read_jsonl(tmp_path / "out.jsonl")} == {"a", "b", "m", "c"}
