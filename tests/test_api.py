"""The Python API: batchrun.run / run_async, and the export list of the package."""

from __future__ import annotations

import asyncio
import inspect
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import prompts, read_jsonl, write_jsonl

import batchrun
from batchrun.events import Event, Finished, Planned


def test_all_is_complete_and_sorted() -> None:
    public = {
        name for name, value in vars(batchrun).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert public | {"__version__"} == set(batchrun.__all__)
    assert batchrun.__all__ == sorted(batchrun.__all__)
    for name in batchrun.__all__:
        assert getattr(batchrun, name) is not None


def test_run_returns_the_summary_and_sends_events(tmp_path: Path, sim) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(20))
    events: list[Event] = []

    result = batchrun.run(source, base_url=sim.base_url, api_key="sk-or-test", on_event=events.append,
                          output=tmp_path / "out.jsonl", concurrency=4, params={"temperature": 0})

    assert result.exit_code == 0
    assert result.summary.succeeded == 20
    assert result.output == tmp_path / "out.jsonl"
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 20
    assert isinstance(events[0], Planned)
    assert sum(isinstance(e, Finished) for e in events) == 20


def test_run_inside_a_running_event_loop_like_a_notebook(tmp_path: Path, sim) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(10))
    threads: set[str] = set()

    async def notebook_cell() -> batchrun.RunResult:
        assert asyncio.get_running_loop() is not None
        return batchrun.run(source, base_url=sim.base_url, api_key="k",
                            on_event=lambda e: threads.add(threading.current_thread().name))

    result = asyncio.run(notebook_cell())

    assert result.exit_code == 0 and result.summary.succeeded == 10
    assert threads == {"batchrun"}  # the job ran on its own loop in a worker thread


def test_run_async_and_a_job_config(tmp_path: Path, sim) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(5))
    config = batchrun.JobConfig(input=source, output=tmp_path / "a.jsonl", base_url=sim.base_url,
                                params={"max_tokens": 8})

    result = asyncio.run(batchrun.run_async(config, api_key="k", output=tmp_path / "b.jsonl",
                                            params={"temperature": 0}))

    assert result.exit_code == 0 and result.output == tmp_path / "b.jsonl"
    body = read_jsonl(tmp_path / "b.jsonl")[0]
    assert body["usage"]["completion_tokens"] <= 8


def test_the_simulator_by_name_and_a_job_file(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    job = tmp_path / "job.toml"
    job.write_text(f'input = "{source}"\noutput = "out.jsonl"\nbase_url = "sim"\n')
    result = batchrun.run(job, limit=2)
    assert result.exit_code == 0 and result.summary.succeeded == 2


@pytest.mark.parametrize(("options", "message"), [
    ({"modle": "x"}, "unknown option 'modle'"), ({"concurrency": 0}, "concurrency must be")])
def test_bad_options_are_config_errors(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    with pytest.raises(batchrun.ConfigError, match=message):
        batchrun.run(source, **options)
