"""Batch mode end to end: real CLI processes against the simulator's Batch APIs, killed and rerun.

Every test checks the promise from the outside: one record per id, no submission made twice (the
simulator's own batch list), nothing billed twice (its ledger), and the records' billed_usd adding
up to what the ledger billed.
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import batchrun_cmd, cli_env, line_count, prompts, read_jsonl, run_cli, write_jsonl

from batchrun.batch.journal import journal_path
from batchrun.sim import SimServer

FAST: dict[str, Any] = {
    "batch_validating_s": 0.05, "batch_processing_s": 0.6, "batch_visibility_s": 0.2,
    "batch_list_cache_s": 0.1,
}
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, key: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with _OPENER.open(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return orjson.loads(response.read())


def _post(url: str, doc: Any) -> Any:
    request = urllib.request.Request(url, data=orjson.dumps(doc), method="POST",
                                     headers={"Content-Type": "application/json"})
    with _OPENER.open(request, timeout=10) as response:
        return orjson.loads(response.read())


def sim_batches(sim: SimServer) -> list[dict[str, Any]]:
    batches: list[dict[str, Any]] = _get(sim.root_url + "/_sim/batches")["batches"]
    return batches


def wait_for(condition: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def batch_job(
    tmp_path: Path, sim: SimServer, rows: list[dict[str, Any]], *, limits: str = "", extra: str = "",
    openai: bool = False, poll: float = 0.1,
) -> Path:
    input_path = write_jsonl(tmp_path / "in.jsonl", rows)
    job = tmp_path / "job.toml"
    dialect = (
        'model = "openai/gpt-4o-mini"\napi_key_env = "SIM_OPENAI_KEY"\n' if openai else ""
    )
    pricing = (
        '[pricing."openai/gpt-4o-mini"]\nprompt_per_m = 0.15\ncompletion_per_m = 0.6\n' if openai else ""
    )
    job.write_text(
        f'input = "{input_path}"\noutput = "{tmp_path / "out.jsonl"}"\nbase_url = "{sim.base_url}"\n'
        f'mode = "batch"\n{dialect}{extra}\n'
        f"[limits]\npoll_interval_s = {poll}\n{limits}\n"
        "[retry]\nbackoff_base_s = 0.01\nbackoff_cap_s = 0.05\n"
        f"{pricing}"
    )
    return job


def run_batch(job: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("run", job, *args, env=cli_env(SIM_OPENAI_KEY="sk-sim-openai-key"), timeout=180)


def start_batch(job: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(batchrun_cmd("run", job), env=cli_env(SIM_OPENAI_KEY="sk-sim-openai-key"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def journal_ops(out: Path) -> list[dict[str, Any]]:
    return read_jsonl(journal_path(out)) if journal_path(out).exists() else []


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)  # also closes its pipe


def assert_exactly_once(out: Path, sim: SimServer, ids: set[str]) -> list[dict[str, Any]]:
    """One record per id, no submission twice, nothing billed twice, billed_usd = the ledger's."""
    results = read_jsonl(out)
    errors = read_jsonl(out.with_name("out.errors.jsonl"))
    done = [r["custom_id"] for r in results]
    assert len(done) == len(set(done)), Counter(done).most_common(3)
    failing = [r["custom_id"] for r in errors if r["custom_id"] not in set(done)]
    assert len(failing) == len(set(failing))
    assert set(done) | set(failing) == ids
    for record in results:
        assert record["batch_id"] and record["error"] is None
    # The wire ids of every submission, mapped back to input ids through the journal.
    wire_to_input = {f"{op['nonce']}-{i}": item[0] for op in journal_ops(out) if op["op"] == "submit"
                     for i, item in enumerate(op["items"])}
    batches = sim_batches(sim)
    per_nonce = Counter(b["custom_ids"][0].rsplit("-", 1)[0] for b in batches)
    assert not per_nonce or max(per_nonce.values()) == 1, per_nonce  # no submission made twice
    ledger = _get(sim.root_url + "/_sim/ledger")
    billed_rows = [e for e in ledger["entries"] if e["billed"] and e["batch_id"]]
    per_id = Counter(wire_to_input[e["custom_id"]] for e in billed_rows)
    assert not per_id or max(per_id.values()) == 1, per_id.most_common(3)  # nothing billed twice
    billed = sum(r["billed_usd"] for r in results) + sum(
        r["billed_usd"] for r in errors if r["custom_id"] in set(failing))
    assert billed == pytest.approx(ledger["counts"]["batch_billed_usd"], rel=1e-9, abs=1e-15)
    return results


# -- the happy path, status and purge ------------------------------------------------------------


def test_three_batches_exactly_once_listed_by_status(tmp_path: Path, sim_factory: Callable[..., SimServer]) -> None:
    sim = sim_factory(**FAST)
    job = batch_job(tmp_path, sim, prompts(25), limits="max_batch_requests = 10")
    done = run_batch(job)
    assert done.returncode == 0, done.stderr
    assert "mode batch" in done.stderr and "3 batches to submit" in done.stderr
    assert "estimate at the batch price" in done.stderr
    results = assert_exactly_once(tmp_path / "out.jsonl", sim, {f"p{i}" for i in range(25)})
    assert len({r["batch_id"] for r in results}) == 3
    assert all(r["usage"]["cost_source"] == "provider" and r["attempts"] == 1 for r in results)
    assert len(sim_batches(sim)) == 3
    status = run_cli("status", tmp_path / "out.jsonl")
    assert status.returncode == 0, status.stderr
    listed = [line for line in status.stdout.splitlines() if line.lstrip().startswith("batch-")]
    assert len(listed) == 3 and all("collected" in line for line in listed)
    # A rerun finds everything done: nothing is submitted again.
    again = run_batch(job)
    assert again.returncode == 0, again.stderr
    assert len(sim_batches(sim)) == 3


def test_purge_deletes_each_batch_once_collected(tmp_path: Path, sim_factory: Callable[..., SimServer]) -> None:
    sim = sim_factory(**FAST)
    job = batch_job(tmp_path, sim, prompts(12), limits="max_batch_requests = 5")
    done = run_batch(job, "--purge")
    assert done.returncode == 0, done.stderr
    assert_exactly_once(tmp_path / "out.jsonl", sim, {f"p{i}" for i in range(12)})
    batches = sim_batches(sim)
    assert len(batches) == 3 and all(b["deleted"] for b in batches)
    assert sum(1 for op in journal_ops(tmp_path / "out.jsonl") if op["op"] == "purged") == 3


# -- kills: during submission, while batches run, while results are collected ----------------------


def test_sigkill_between_post_and_reply_then_rerun_adopts_the_batch(
    tmp_path: Path, sim_factory: Callable[..., SimServer]
) -> None:
    # The first create persists its batch but its reply is lost, and the batch stays invisible
    # (GET 404, missing from the list) for a while: the client is killed while it looks for it.
    sim = sim_factory(**{**FAST, "batch_lost_replies": 1, "batch_first_visibility_s": 1.0})
    out = tmp_path / "out.jsonl"
    job = batch_job(tmp_path, sim, prompts(25), limits="max_batch_requests = 10", poll=0.5)
    proc = start_batch(job)
    wait_for(lambda: len(sim_batches(sim)) == 1 and [op["op"] for op in journal_ops(out)] == ["submit"])
    kill(proc)
    rerun = run_batch(job)
    assert rerun.returncode == 0, rerun.stderr
    assert "made by a submission whose reply was lost" in rerun.stderr
    assert_exactly_once(out, sim, {f"p{i}" for i in range(25)})
    assert len(sim_batches(sim)) == 3  # the lost one was adopted, not submitted again


def test_lost_reply_in_one_run_is_found_not_resubmitted(tmp_path: Path, sim_factory: Callable[..., SimServer]) -> None:
    sim = sim_factory(**{**FAST, "batch_lost_replies": 2, "batch_visibility_s": 0.3})
    job = batch_job(tmp_path, sim, prompts(25), limits="max_batch_requests = 10", poll=0.2)
    done = run_batch(job)
    assert done.returncode == 0, done.stderr
    assert_exactly_once(tmp_path / "out.jsonl", sim, {f"p{i}" for i in range(25)})
    assert len(sim_batches(sim)) == 3


def test_sigkill_while_batches_run_then_rerun_collects_them(
    tmp_path: Path, sim_factory: Callable[..., SimServer]
) -> None:
    sim = sim_factory(**{**FAST, "batch_processing_s": 2.0})
    out = tmp_path / "out.jsonl"
    job = batch_job(tmp_path, sim, prompts(35), limits="max_batch_requests = 10")
    proc = start_batch(job)
    wait_for(lambda: sum(op["op"] == "submitted" for op in journal_ops(out)) == 4)
    kill(proc)
    assert not any(op["op"] == "collected" for op in journal_ops(out))
    rerun = run_batch(job)
    assert rerun.returncode == 0, rerun.stderr
    assert "from an earlier run" in rerun.stderr
    assert_exactly_once(out, sim, {f"p{i}" for i in range(35)})
    assert len(sim_batches(sim)) == 4


def test_sigkill_while_results_are_collected_then_rerun(
    tmp_path: Path, sim_factory: Callable[..., SimServer]
) -> None:
    sim = sim_factory(**{**FAST, "batch_processing_s": 1.0})
    out = tmp_path / "out.jsonl"
    n = 3000
    job = batch_job(tmp_path, sim, prompts(n, max_tokens=2), limits="max_batch_requests = 1000")
    proc = start_batch(job)
    wait_for(lambda: out.exists() and out.stat().st_size > 0, timeout=120)
    kill(proc)
    written = line_count(out)  # whole records: a kill may leave a torn last line (repaired on rerun)
    assert written < n  # killed before the last batch was written
    rerun = run_batch(job)
    assert rerun.returncode == 0, rerun.stderr
    results = assert_exactly_once(out, sim, {f"p{i}" for i in range(n)})
    assert len(sim_batches(sim)) == 3
    # Each batch's records add up to what that batch was billed, whichever run wrote them.
    collected = {op["batch_id"]: op["cost_usd"] for op in journal_ops(out) if op["op"] == "collected"}
    per_batch: Counter[str] = Counter()
    for record in results:
        per_batch[record["batch_id"]] += record["billed_usd"]
    for batch_id, cost in collected.items():
        assert per_batch[batch_id] == pytest.approx(cost, rel=1e-9)


def test_sigint_stops_polling_and_the_rerun_collects(tmp_path: Path, sim_factory: Callable[..., SimServer]) -> None:
    sim = sim_factory(**{**FAST, "batch_processing_s": 2.0})
    out = tmp_path / "out.jsonl"
    job = batch_job(tmp_path, sim, prompts(10))
    proc = start_batch(job)
    wait_for(lambda: any(op["op"] == "submitted" for op in journal_ops(out)))
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "keep running at the provider" in stderr and "Traceback" not in stderr
    rerun = run_batch(job)
    assert rerun.returncode == 0, rerun.stderr
    assert_exactly_once(out, sim, {f"p{i}" for i in range(10)})
    assert len(sim_batches(sim)) == 1


# -- rows that never ran, failed rows, failed batches, lines refused before submitting -----------------


def test_expired_batch_keeps_rows_that_ran_and_resubmits_the_rest(
    tmp_path: Path, sim_factory: Callable[..., SimServer]
) -> None:
    sim = sim_factory(**FAST)
    rows = prompts(10)
    rows[4]["prompt"] += " [[sim:expire*1]]"  # the batch expires here: this row and later ones never ran
    job = batch_job(tmp_path, sim, rows)
    done = run_batch(job)
    assert done.returncode == 0, done.stderr
    results = assert_exactly_once(tmp_path / "out.jsonl", sim, {f"p{i}" for i in range(10)})
    batches = sim_batches(sim)
    assert [b["status"] for b in batches] == ["expired", "completed"]
    assert batches[1]["request_counts"]["total"] == 6
    assert all(r["attempts"] == 1 for r in results)  # a row that never ran used no attempt


def test_row_failures_transient_go_again_verdicts_are_records(
    tmp_path: Path, sim_factory: Callable[..., SimServer]
) -> None:
    sim = sim_factory(**FAST)
    rows = prompts(8)
    rows[1]["prompt"] += " [[sim:row500*1]]"
    rows[2]["prompt"] += " [[sim:429*1]]"
    rows[3]["prompt"] += " [[sim:timeout*1]]"
    rows[5]["prompt"] += " [[sim:row400]]"
    job = batch_job(tmp_path, sim, rows)
    done = run_batch(job)
    assert done.returncode == 1, done.stderr
    results = assert_exactly_once(tmp_path / "out.jsonl", sim, {f"p{i}" for i in range(8)})
    by_id = {r["custom_id"]: r for r in results}
    assert {by_id[f"p{i}"]["attempts"] for i in (1, 2, 3)} == {2}
    assert by_id["p0"]["attempts"] == 1
    errors = read_jsonl(tmp_path / "out.errors.jsonl")
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [("p5", "invalid_request")]
    assert errors[0]["batch_id"] and errors[0]["response"]["status_code"] == 400
    assert len(sim_batches(sim)) == 2


def test_lines_the_second_stage_would_reject_are_caught_first(
    tmp_path: Path, sim_factory: Callable[..., SimServer]
) -> None:
    sim = sim_factory(**FAST)
    rows: list[dict[str, Any]] = prompts(6)
    image = [{"type": "text", "text": "what is it"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    rows += [
        {"custom_id": "stream", "prompt": "hi", "max_tokens": 8, "stream": True},
        {"custom_id": "inline-image", "messages": [{"role": "user", "content": image}], "max_tokens": 8},
        {"custom_id": "audio", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}}]}], "max_tokens": 8},
        {"custom_id": "online", "prompt": "hi", "model": "openai/gpt-4o-mini:online", "max_tokens": 8},
        {"custom_id": "zero", "prompt": "hi", "max_tokens": 0},
        # Not caught here: the provider fails the whole batch on it, naming it; the rest go again.
        {"custom_id": "robot", "messages": [{"role": "robot", "content": "beep"}], "max_tokens": 8},
    ]
    job = batch_job(tmp_path, sim, rows)
    done = run_batch(job)
    assert done.returncode == 1, done.stderr
    assert_exactly_once(tmp_path / "out.jsonl", sim, {r["custom_id"] for r in rows})
    errors = {e["custom_id"]: e for e in read_jsonl(tmp_path / "out.errors.jsonl")}
    for custom_id, line in (("stream", 7), ("inline-image", 8), ("audio", 9), ("online", 10), ("zero", 11)):
        assert errors[custom_id]["error"]["code"] == "invalid_input"
        assert errors[custom_id]["error"]["line"] == line
    assert errors["robot"]["error"]["code"] == "invalid_request"
    assert "failed the batch for this line" in errors["robot"]["error"]["message"]
    batches = sim_batches(sim)
    assert [b["status"] for b in batches] == ["failed", "completed"]
    assert batches[0]["request_counts"]["total"] == 7 and batches[1]["request_counts"]["total"] == 6
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 6


# -- money: 402 on read, the budget at the batch price ------------------------------------------------


def test_402_reading_a_finished_batch_stops_and_the_rerun_collects(
    tmp_path: Path, sim_factory: Callable[..., SimServer]
) -> None:
    sim = sim_factory(**{**FAST, "batch_processing_s": 1.0, "credits_usd": 5.0})
    out = tmp_path / "out.jsonl"
    job = batch_job(tmp_path, sim, prompts(10))
    proc = start_batch(job)
    wait_for(lambda: any(op["op"] == "submitted" for op in journal_ops(out)))
    _post(sim.root_url + "/_sim/balance", {"credits_usd": 1e-9})  # its cost is now above the balance
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    assert "add credits" in stderr and "Traceback" not in stderr
    assert not out.exists() or not read_jsonl(out)
    _post(sim.root_url + "/_sim/balance", {"credits_usd": 5.0})
    rerun = run_batch(job)
    assert rerun.returncode == 0, rerun.stderr
    assert_exactly_once(out, sim, {f"p{i}" for i in range(10)})
    assert len(sim_batches(sim)) == 1


def test_budget_reserves_each_batch_at_the_batch_price_and_never_bills_past_it(
    tmp_path: Path, sim_factory: Callable[..., SimServer]
) -> None:
    sim = sim_factory(**FAST)
    rows = prompts(30, max_tokens=200)
    # The worst case of one 10-request batch at the batch price is about $0.0003: a cap of
    # $0.0004 lets one batch in at a time, and the actual costs (far lower) free the rest.
    job = batch_job(tmp_path, sim, rows, limits="max_batch_requests = 10\nmax_cost_usd = 0.0004")
    done = run_batch(job)
    assert done.returncode == 0, done.stderr
    assert_exactly_once(tmp_path / "out.jsonl", sim, {f"p{i}" for i in range(30)})
    ledger = _get(sim.root_url + "/_sim/ledger")
    assert ledger["counts"]["batch_billed_usd"] <= 0.0004
    # A cap below one request's worst case: nothing is submitted, a clean stop.
    tight = tmp_path / "tight"
    tight.mkdir()
    job = batch_job(tight, sim, prompts(5, prefix="t", max_tokens=200), limits="max_cost_usd = 0.000001")
    stopped = run_batch(job)
    assert stopped.returncode == 3, stopped.stderr
    assert "budget reached" in stopped.stderr
    assert len(sim_batches(sim)) == 3


# -- refusals: one line, nothing submitted ----------------------------------------------------------


@pytest.mark.parametrize(("options", "model", "code", "needle"), [
    ({}, "meta-llama/llama-3.1-8b-instruct:free", 3, "--mode sync"),
    ({"batch_api": False}, None, 2, "has no Batch API"),
    ({"api_keys": frozenset({"sk-or-the-only-good-key"})}, None, 3, "key"),
])
def test_refusals_are_one_line_and_submit_nothing(
    tmp_path: Path, sim_factory: Callable[..., SimServer], options: dict[str, Any], model: str | None,
    code: int, needle: str,
) -> None:
    sim = sim_factory(**FAST, **options)
    extra = f'model = "{model}"\n' if model else ""
    job = batch_job(tmp_path, sim, prompts(4), extra=extra)
    done = run_batch(job)
    assert done.returncode == code, done.stderr
    assert needle in done.stderr and "Traceback" not in done.stderr
    if options.get("batch_api") is not False and "api_keys" not in options:
        assert sim_batches(sim) == []
    assert not (tmp_path / "out.jsonl").exists() or not read_jsonl(tmp_path / "out.jsonl")


# -- OpenAI's Batch API -------------------------------------------------------------------------------


def test_openai_flow_killed_while_running_then_rerun(tmp_path: Path, sim_factory: Callable[..., SimServer]) -> None:
    sim = sim_factory(dialect="openai", **{**FAST, "batch_processing_s": 1.5})
    out = tmp_path / "out.jsonl"
    rows = prompts(25)
    rows[3]["prompt"] += " [[sim:row500*1]]"
    job = batch_job(tmp_path, sim, rows, limits="max_batch_requests = 10", openai=True)
    proc = start_batch(job)
    wait_for(lambda: sum(op["op"] == "submitted" for op in journal_ops(out)) == 3)
    kill(proc)
    ops = [op["op"] for op in journal_ops(out)]
    assert ops.count("uploaded") == 3 and "collected" not in ops
    rerun = run_batch(job, "--purge")
    assert rerun.returncode == 0, rerun.stderr
    results = assert_exactly_once(out, sim, {f"p{i}" for i in range(25)})
    assert all(r["usage"]["cost_source"] == "price_table" for r in results)
    assert {r["custom_id"]: r["attempts"] for r in results}["p3"] == 2
    assert len(sim_batches(sim)) == 4  # three, then one for the row that failed transiently
    files = _get(sim.base_url + "/files?purpose=batch", key="sk-sim-openai-key")
    assert files["data"] == []  # --purge deleted every input, output and error file


def test_openai_lost_reply_is_found_by_its_metadata(tmp_path: Path, sim_factory: Callable[..., SimServer]) -> None:
    sim = sim_factory(dialect="openai", **{**FAST, "batch_lost_replies": 1})
    job = batch_job(tmp_path, sim, prompts(12), limits="max_batch_requests = 5", openai=True)
    done = run_batch(job)
    assert done.returncode == 0, done.stderr
    assert "made by a submission whose reply was lost" in done.stderr
    assert_exactly_once(tmp_path / "out.jsonl", sim, {f"p{i}" for i in range(12)})
    assert len(sim_batches(sim)) == 3


@pytest.mark.parametrize("dialect", ["openrouter", "openai"])
def test_batch_route_faults_never_make_a_second_batch(
    tmp_path: Path, sim_factory: Callable[..., SimServer], dialect: str
) -> None:
    # 429s and 500s on every batch route (nothing created), and dropped replies (created, reply
    # lost): retried, looked for, adopted; never a line in two batches that both ran.
    sim = sim_factory(dialect=dialect, seed=3, batch_faults={"429": 0.15, "500": 0.15, "drop": 0.1},
                      **FAST)
    job = batch_job(tmp_path, sim, prompts(40), limits="max_batch_requests = 10",
                    openai=dialect == "openai")
    done = run_batch(job)
    assert done.returncode == 0, done.stderr
    assert_exactly_once(tmp_path / "out.jsonl", sim, {f"p{i}" for i in range(40)})


def test_sync_mode_is_refused_while_batches_may_complete(
    tmp_path: Path, sim_factory: Callable[..., SimServer]
) -> None:
    sim = sim_factory(**{**FAST, "batch_processing_s": 30.0})
    out = tmp_path / "out.jsonl"
    job = batch_job(tmp_path, sim, prompts(5))
    proc = start_batch(job)
    wait_for(lambda: any(op["op"] == "submitted" for op in journal_ops(out)))
    kill(proc)
    sync = run_batch(job, "--mode", "sync")
    assert sync.returncode == 2, sync.stderr
    assert "--mode batch to collect them first" in sync.stderr and "Traceback" not in sync.stderr
    assert _get(sim.root_url + "/_sim/ledger")["counts"]["requests"] == 0  # no chat request was sent


def test_openai_expired_batch_resubmits_what_never_ran(tmp_path: Path, sim_factory: Callable[..., SimServer]) -> None:
    sim = sim_factory(dialect="openai", **FAST)
    rows = prompts(8)
    rows[3]["prompt"] += " [[sim:expire*1]]"
    job = batch_job(tmp_path, sim, rows, openai=True)
    done = run_batch(job)
    assert done.returncode == 0, done.stderr
    results = assert_exactly_once(tmp_path / "out.jsonl", sim, {f"p{i}" for i in range(8)})
    assert [b["status"] for b in sim_batches(sim)] == ["expired", "completed"]
    assert all(r["attempts"] == 1 for r in results)


def test_one_job_killed_in_submission_while_running_and_while_collecting(
    tmp_path: Path, sim_factory: Callable[..., SimServer]
) -> None:
    # Three SIGKILLs of one three-batch job, one at each stage, then a run to the end.
    sim = sim_factory(**{**FAST, "batch_processing_s": 1.5, "batch_lost_replies": 1,
                         "batch_first_visibility_s": 1.0})
    out = tmp_path / "out.jsonl"
    n = 3000
    job = batch_job(tmp_path, sim, prompts(n, max_tokens=2), limits="max_batch_requests = 1000", poll=0.5)
    proc = start_batch(job)  # 1: between the first POST and its (lost) reply
    wait_for(lambda: len(sim_batches(sim)) == 1 and [op["op"] for op in journal_ops(out)] == ["submit"])
    kill(proc)
    proc = start_batch(job)  # 2: every batch submitted, none collected
    wait_for(lambda: sum(op["op"] == "submitted" for op in journal_ops(out)) == 3
             and not any(op["op"] == "collected" for op in journal_ops(out)))
    kill(proc)
    proc = start_batch(job)  # 3: some records written, not all
    wait_for(lambda: out.exists() and out.stat().st_size > 0, timeout=120)
    kill(proc)
    assert line_count(out) < n  # whole records; a torn last line is repaired by the rerun
    final = run_batch(job)
    assert final.returncode == 0, final.stderr
    assert_exactly_once(out, sim, {f"p{i}" for i in range(n)})
    assert len(sim_batches(sim)) == 3
