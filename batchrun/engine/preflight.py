"""What happens before the first request, for every way of running a job.

In order: the endpoint (or the simulator) and the key; the output, which must not be the input,
opened under its lock with the manifest checked and a torn tail repaired; what the output already
holds (done ids, failures, money billed); the attempt log; the connection pool; the provider's
prices (cached a day, fetched, or stale with a notice); the budget's preconditions; the plan line;
and on OpenRouter the key's own limit (``GET /key``). Everything opened is registered on the
caller's exit stack, so a failure at any step closes what the steps before it opened.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from batchrun import __version__
from batchrun.config import (
    DEFAULT_KEY_ENV,
    DEFAULT_MODEL,
    JobConfig,
    api_key_from_env,
    output_paths,
)
from batchrun.engine.budget import ASSUMED_UNBOUNDED_OUTPUT, Budget, billed_in_output, estimate_cost
from batchrun.engine.redact import Redactor
from batchrun.errors import ConfigError, ErrorKind
from batchrun.events import EventHandler, Notice, Planned
from batchrun.inputs import fingerprint, iter_lines, measure, open_input, readable
from batchrun.ledger import MANIFEST_FORMAT, Ledger, ResumeState
from batchrun.price_cache import load_provider_prices
from batchrun.pricing import PriceBook
from batchrun.records import InputParser, InvalidLine
from batchrun.retry import classify_response
from batchrun.trace import Trace
from batchrun.transport import Transport
from batchrun.units import usd

__all__ = [
    "PLAN_SAMPLE_LINES", "Preflight", "job_manifest", "parser_for", "parser_for_manifest",
    "preflight", "sim_args", "stop_hint",
]

SIM_KEY = "sk-or-v1-batchrun-simulator"
PLAN_SAMPLE_LINES = 1000  # lines parsed for the plan line's cost: exact for small jobs, fast for big


@dataclass
class Preflight:
    """What a run has once preflight is done: its endpoint, output, prices, budget and plan."""

    config: JobConfig
    base_url: str
    redactor: Redactor
    ledger: Ledger
    manifest: dict[str, Any]
    state: ResumeState
    transport: Transport
    prices: PriceBook
    budget: Budget
    plan: Planned
    key_sent: bool
    trace: Trace | None = None
    refused: str | None = None  # the key check refused the key: stop before any request

    def skip_ids(self) -> Collection[str]:
        """Ids the run must not send: done ones, and kept per-line verdicts unless retried."""
        from batchrun.errors import PER_LINE_VERDICTS

        kept = [] if self.config.retry_failed else [
            custom_id for custom_id, kind in self.state.failed.items() if kind in PER_LINE_VERDICTS
        ]
        if not kept:
            return self.state.done_ids
        skip = self.state.done_ids.copy()
        for custom_id in kept:
            skip.add(custom_id)
        return skip

    def kept_failures(self) -> int:
        from batchrun.errors import PER_LINE_VERDICTS

        if self.config.retry_failed:
            return 0
        return sum(1 for kind in self.state.failed.values() if kind in PER_LINE_VERDICTS)


def parser_for(config: JobConfig, *, skip_ids: Collection[str] = frozenset()) -> InputParser:
    """The one InputParser of a job: run, estimate and show build requests with it alike."""
    return InputParser(
        model=config.model, params=config.params, system=config.system, template=config.template,
        skip_ids=skip_ids, budget_set=config.max_cost_usd is not None,
        keep_fields=config.keep_fields, schema=config.schema,
        ask_stream_usage=not config.speaks_openrouter,  # OpenRouter always sends stream usage
    )


def parser_for_manifest(manifest: dict[str, Any]) -> InputParser:
    """The parser of the job an output's manifest describes (``show`` rebuilds bodies with it)."""
    request = manifest.get("request") or {}
    endpoint = manifest.get("endpoint") or {}
    config = JobConfig(
        input=Path(str((manifest.get("input") or {}).get("path") or "")), output=Path(os.devnull),
        model=str(manifest.get("model") or "") or DEFAULT_MODEL,
        params=request.get("params") or {}, system=request.get("system"),
        template=request.get("template"), schema=request.get("schema"),
        # The manifest says whether streams were asked for usage (only non-OpenRouter servers are).
        api="openai" if endpoint.get("ask_stream_usage") else "openrouter",
    )
    return parser_for(config)


def stop_hint(config: JobConfig, kind: str, message: str, *, key_sent: bool) -> str:
    """The one line that tells a user why the job stopped for its key or credits, and what to do."""
    if kind != ErrorKind.AUTH_ERROR:
        return f"out of credits ({message}): add credits or raise the key's limit, then run again"
    key_env = config.api_key_env
    if key_sent:
        return f"the API key was refused ({message}): set {key_env} to a valid key and run again"
    if key_env == DEFAULT_KEY_ENV and not config.speaks_openrouter:
        return (f"the server wants a key ({message}) and none was sent: {key_env} goes to "
                "OpenRouter only, so name this server's variable with --api-key-env (or api_key_env)")
    return f"the server wants a key ({message}) and none was sent: set {key_env} and run again"


async def preflight(
    config: JobConfig,
    stack: contextlib.AsyncExitStack,
    *,
    api_key: str | None,
    emit: EventHandler,
    connections: int | None = None,
) -> Preflight:
    """Everything before the first request; what it opens is closed by ``stack``."""
    base_url, key = _endpoint(config, stack, api_key)
    redactor = Redactor(key)
    _check_output_is_not_input(config)
    ledger = Ledger(config.output, fsync_interval_s=config.fsync_interval_s)
    stack.callback(ledger.close)
    manifest = job_manifest(config)
    state = ledger.open(manifest, force=config.force)
    _announce_repairs(config, state, emit)
    spent_before = billed_in_output(config.output) if config.max_cost_usd is not None else 0.0
    budget = Budget(config.max_cost_usd, spent_before_usd=spent_before)
    trace = None
    if config.log_path is not None:
        trace = Trace(config.log_path, redactor=redactor)
        stack.callback(trace.close)
    transport = await stack.enter_async_context(
        Transport(
            base_url, key, connections=connections or config.concurrency, timeout_s=config.timeout_s,
            headers=config.headers, stream_idle_s=config.stream_idle_s,
            env_proxy=not config.use_sim,  # a proxy cannot reach our own loopback child
        )
    )
    prices = PriceBook(config.pricing, builtin=config.builtin_prices)
    if config.speaks_openrouter:  # only OpenRouter (and its simulator) serves prices and /key
        # Not cached for the simulator: its port, so its API root, changes every run.
        loaded = await load_provider_prices(
            prices, transport.root, lambda: transport.get_json("/models"), use_cache=not config.use_sim
        )
        if loaded.notice:
            emit(Notice(loaded.notice))
    _check_budget_prices(config, prices)
    pre = Preflight(
        config, base_url, redactor, ledger, manifest, state, transport, prices, budget,
        Planned("", 0, False, 0), key_sent=bool(key), trace=trace,
    )
    pre.plan = _plan(pre)
    if config.speaks_openrouter:
        await _check_key(pre)
    return pre


def _endpoint(
    config: JobConfig, stack: contextlib.AsyncExitStack, api_key: str | None
) -> tuple[str, str | None]:
    if config.use_sim:
        from batchrun.sim import SimProcess  # the simulator is only loaded when asked for

        sim = stack.enter_context(SimProcess(sim_args(config.sim)))
        return sim.base_url, api_key or SIM_KEY
    key = api_key or api_key_from_env(config)
    if key is None and config.speaks_openrouter:
        raise ConfigError(
            f"no API key: set {config.api_key_env} (get a key at https://openrouter.ai/keys), "
            "or try the job on the built-in simulator (--sim, base_url=\"sim\")"
        )
    return config.base_url, key


def _check_output_is_not_input(config: JobConfig) -> None:
    """The output files are never the input, whatever the flags: results would land in it."""
    for name, path in output_paths(config.output).items():
        if name == "lock":
            continue
        same = _same_file(path, config.input)
        if same:
            raise ConfigError(
                f"the output {path} is the input file itself: choose another output (-o, output=)"
            )


def _same_file(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return os.path.abspath(a) == os.path.abspath(b)


def job_manifest(config: JobConfig) -> dict[str, Any]:
    """What identifies a job's output: input content, model and request parameters."""
    with readable(config.input):
        input_fingerprint = fingerprint(config.input)
    return {
        "format": MANIFEST_FORMAT,
        "batchrun": __version__,
        "input": {"path": str(config.input), "fingerprint": input_fingerprint},
        "model": config.model,
        "request": {
            "params": dict(config.params),
            "system": config.system,
            "template": config.template,
            "schema": config.schema,  # replies are judged by it: another one is another job
        },
        # Not compared on resume: how `show` rebuilds the body that was sent.
        "endpoint": {"ask_stream_usage": not config.speaks_openrouter},
    }


def _announce_repairs(config: JobConfig, state: ResumeState, emit: EventHandler) -> None:
    if state.repaired_bytes:
        emit(Notice(f"repaired the output: cut a torn last line ({state.repaired_bytes} bytes)"))
    if state.corrupt_lines:
        emit(Notice(f"{state.corrupt_lines} unreadable lines in the output were ignored"))
    for model in state.unavailable_models:
        if model == config.model:
            emit(Notice(f"model {model} was unavailable in the last run"))


def _check_budget_prices(config: JobConfig, prices: PriceBook) -> None:
    if config.max_cost_usd is None:
        return
    if prices.get(config.model) is None:
        raise ConfigError(
            f"--max-cost needs the price of {config.model}: add [pricing.\"{config.model}\"] "
            "with prompt_per_m and completion_per_m to the job file"
        )
    if "max_tokens" in config.params or "max_completion_tokens" in config.params:
        return
    # Lines may carry their own max_tokens (OpenAI batch files do): look at the first ones.
    with open_input(config.input) as stream:
        for count, (_, raw) in enumerate(iter_lines(stream)):
            if count >= 100:
                break
            if b'"max_tokens"' not in raw and b'"max_completion_tokens"' not in raw:
                raise ConfigError(
                    "--max-cost needs every request to have max_tokens, so that its worst case is "
                    "known: add -p max_tokens=N (or max_tokens under [params])"
                )


def _plan(pre: Preflight) -> Planned:
    """The plan line: lines, output, endpoint, model, and the job's cost as an estimate.

    The cost is ``budget.estimate_cost`` over the first ``PLAN_SAMPLE_LINES`` lines, scaled to
    the lines still to do: exact in kind for small jobs, and it never reads a big input whole
    before the first request.
    """
    config, state = pre.config, pre.state
    size = measure(config.input)
    lines = size.lines if config.limit is None else min(size.lines, config.limit)
    approx = "" if size.exact else "~"
    parts = [f"{approx}{lines:,} lines from {config.input.name}", f"→ {config.output.name}"]
    done = len(state.done_ids)
    kept = pre.kept_failures()
    if done or kept:
        already = [f"{done:,} already done"] if done else []
        if kept:
            already.append(f"{kept:,} kept as failed (--retry-failed to retry)")
        parts.append(f"({', '.join(already)})")
    where = f"{'simulator ' if config.use_sim else ''}{pre.base_url}"
    text = " ".join(parts) + f" | {where} | model {config.model}"
    sample = _sample_cost(pre, lines)
    worst: float | None = None
    if sample is not None:
        expected, high, unpriced, unbounded, source, invalid = sample
        if invalid is not None:
            count, read, reason = invalid
            text += f" | {count:,} of the first {read:,} lines are invalid ({reason})"
        if invalid is not None and invalid[0] == invalid[1]:
            pass  # no request to price
        elif unpriced:
            text += f" | cost: no price known for {unpriced}"
        else:
            text += f" | cost ~{usd(expected)} expected"
            if not unbounded:
                worst = high
                text += f", ~{usd(high)} if every reply uses max_tokens"
            else:
                text += " (some lines have no max_tokens)"
            text += f" (estimate; price from {source})"
    budget = pre.budget
    if budget.capped:
        left = max(budget.left() or 0, 0) / 1e9
        text += f" | budget ${config.max_cost_usd:g} for the job, {usd(left)} left"
    return Planned(text, lines, not size.exact, done, worst)


def _sample_cost(
    pre: Preflight, lines: int
) -> tuple[float, float, str | None, bool, str, tuple[int, int, str] | None] | None:
    """(expected, high, a model without price, any line without max_tokens, price source, and
    (invalid lines, lines read, the most common reason) when some of the sample is invalid).

    The first lines are priced whether done or not (a finished job's are all done, and skipping
    them would read the whole input), and the sample is scaled to the lines still to do.
    """
    config = pre.config
    todo = max(lines - len(pre.state.done_ids) - pre.kept_failures(), 0)
    if not todo:
        return None
    parser = parser_for(config)
    expected = high = 0.0
    read = requests = 0
    unbounded = False
    unpriced: str | None = None
    sources: set[str] = set()
    reasons: Counter[str] = Counter()
    with open_input(config.input) as stream:
        for number, raw in iter_lines(stream):
            if read >= PLAN_SAMPLE_LINES or read >= lines:
                break
            item = parser.parse(raw, number)
            if item is None:
                continue
            read += 1
            if isinstance(item, InvalidLine):
                reasons[item.message] += 1
                continue
            requests += 1
            price = pre.prices.get(item.model)
            if price is None:
                unpriced = unpriced or item.model
                continue
            sources.add(pre.prices.source(item.model) or "")
            unbounded = unbounded or item.max_tokens is None
            cost = estimate_cost(item.prompt_tokens_est, item.max_tokens, price,
                                 unbounded_output=ASSUMED_UNBOUNDED_OUTPUT)
            expected += cost.expected
            high += cost.high
    if not read:
        return None
    if not requests:
        return 0.0, 0.0, None, False, "no price", (read, read, reasons.most_common(1)[0][0])
    scale = todo / read
    source = ", ".join(sorted(s for s in sources if s)) or "no price"
    invalid = None
    if reasons:
        invalid = (sum(reasons.values()), read, reasons.most_common(1)[0][0])
    return expected * scale, high * scale, unpriced, unbounded, source, invalid


async def _check_key(pre: Preflight) -> None:
    """Compare the key's remaining limit (OpenRouter's GET /key) with the budget and the plan.

    A key that /key refuses sets ``pre.refused``: the job then stops before any chat request.
    """
    status, payload = await pre.transport.get("/key")
    if status == 401:
        message = classify_response(401, {}, orjson.dumps(payload)).message if payload else "HTTP 401"
        pre.refused = stop_hint(pre.config, ErrorKind.AUTH_ERROR, pre.redactor.text(message),
                                key_sent=pre.key_sent)
        return
    if status != 200:
        return
    data = payload.get("data") if isinstance(payload, dict) else None
    remaining = data.get("limit_remaining") if isinstance(data, dict) else None
    if not isinstance(remaining, (int, float)) or isinstance(remaining, bool):
        return
    cap = pre.config.max_cost_usd
    if cap is not None and cap - pre.budget.spent_usd() > remaining:
        raise ConfigError(
            f"--max-cost ${cap:g} leaves more to spend than this key can (${remaining:.4f}): "
            "lower --max-cost or raise the key's limit on openrouter.ai"
        )
    plan = pre.plan
    if plan.worst_case_usd is not None and plan.worst_case_usd > remaining:
        pre.plan = replace(plan, text=plan.text + f" | key has ${remaining:.4f} left, below the estimate")


def sim_args(options: Any) -> list[str]:
    """Job-file ``[sim]`` options as ``python -m batchrun.sim`` flags."""
    args: list[str] = []
    for key, value in dict(options).items():
        flag = "--" + key.replace("_", "-")
        values: list[Any] = value if isinstance(value, list) else [value]
        if key == "faults" and isinstance(value, dict):
            values = [f"{k}={v}" for k, v in value.items()]
            flag = "--fault"
        for v in values:
            if isinstance(v, bool):  # a switch such as no_cost = true
                args += [flag] if v else []
            else:
                args += [flag, str(v)]
    return args
