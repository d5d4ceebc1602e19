"""The command line: options → config → library call → exit code. The only module that knows
typer and tqdm; it catches only BatchrunError (and click's usage errors) and prints one line."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional

import orjson
import typer
from tqdm import tqdm

from batchrun import __version__
from batchrun.api import run as run_job
from batchrun.config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_TIMEOUT_S,
    load_config,
)
from batchrun.errors import BatchrunError, ConfigError
from batchrun.events import BatchProgress, Event, Finished, Notice, Planned, Retrying
from batchrun.status import job_status

try:  # typer >= 0.20 vendors click; older releases use click itself
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, UsageError  # type: ignore[no-redef,assignment,unused-ignore]
try:  # click >= 8.2 raises it for a bare command with no_args_is_help; older ones print the help
    from typer._click.exceptions import NoArgsIsHelpError
except ImportError:  # pragma: no cover
    try:
        from click.exceptions import NoArgsIsHelpError  # type: ignore[no-redef,assignment,unused-ignore]
    except ImportError:
        class NoArgsIsHelpError(UsageError):  # type: ignore[no-redef]
            """Never raised by this click: a stand-in so ``main`` can name it."""

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # never print locals: they can hold the API key
    rich_markup_mode=None,
    help="Run large prompt sets against OpenAI-compatible chat APIs: rate-limited, resumable, exactly once.",
)


def _print_version(value: bool) -> None:
    if value:
        print(f"batchrun {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print batchrun's version and exit."),
) -> None:
    """Run large prompt sets against OpenAI-compatible chat APIs: rate-limited, resumable, exactly once."""


_SYSTEM_HELP = "System prompt for lines that have none (as system = in a job file; not for OpenAI batch lines)."
_TEMPLATE_HELP = "Prompt template filled from each row's fields, e.g. 'Label: {text}' (as template = in a job file)."
_RPM_HELP = "Requests per minute ceiling; 0: none, clearing the job file's [default: none; adapts to 429s]."
_TPM_HELP = "Tokens per minute ceiling (prompt estimate + max_tokens); 0: none, clearing the job file's."


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parse_params(values: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise ConfigError(f"-p needs key=value, got {value!r}")
        try:
            params[key] = orjson.loads(text)
        except orjson.JSONDecodeError:
            params[key] = text
    return params


class _Display:
    """Turns runner events into a tqdm bar (on a terminal) or a log line every few seconds."""

    def __init__(self, *, progress: bool) -> None:
        self._progress = progress and sys.stderr.isatty()
        self._quiet = not progress
        self._bar: tqdm | None = None
        self._tokens = 0
        self._cost = 0.0
        self._batches = ""  # batch mode: "batches 3 submitted, 2 running, 1 collected | "
        self._started = time.monotonic()
        self._failures = 0
        self._retries = 0
        self._last_note = 0.0
        self._done = 0
        self._total = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, Finished):
            self._done += 1
            self._tokens += event.tokens
            self._cost += event.cost_usd
            if event.kind is not None:
                self._failures += 1
            if self._bar is not None:
                self._bar.update(1)
            now = time.monotonic()
            if now - self._last_note >= (0.5 if self._bar is not None else 5.0):
                self._last_note = now
                self._refresh()
        elif isinstance(event, Retrying):
            self._retries += 1
        elif isinstance(event, BatchProgress):
            self._batches = (f"batches {event.submitted} submitted, {event.running} running, "
                             f"{event.collected} collected | ")
            self._refresh()
            if self._bar is not None:
                self._bar.refresh()
        elif isinstance(event, Planned):
            self._started = time.monotonic()
            _say(f"batchrun: {event.text}")
            self._total = max(event.total_lines - event.already_done, 0)
            if self._progress:
                self._bar = tqdm(total=self._total, unit="req", dynamic_ncols=True, file=sys.stderr,
                                 mininterval=0.25, smoothing=0.1)
        elif isinstance(event, Notice):
            if self._bar is not None:
                self._bar.write(f"batchrun: {event.message}", file=sys.stderr)
            elif not self._quiet or event.important:
                _say(f"batchrun: {event.message}")

    def _refresh(self) -> None:
        text = self._batches + f"tok {self._tokens:,} ${self._cost:.4f} fail {self._failures} retry {self._retries}"
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
        elif not self._quiet:
            elapsed = time.monotonic() - self._started
            rate = self._done / elapsed if elapsed > 0 else 0.0
            _say(f"batchrun: {self._done:,}/{self._total:,} done, {rate:,.1f} req/s, {text}")

    def close(self) -> None:
        if self._bar is not None:
            self._refresh()
            self._bar.refresh()
            self._bar.close()


@app.command()
def run(
    target: Path = typer.Argument(..., help="A job file (.toml) or an input file (.jsonl, .jsonl.gz, .csv, .tsv)."),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Results file [default: <input>.results.jsonl beside the input]."
    ),
    model: Optional[str] = typer.Option(
        None, "--model", help="Model for lines that name none [default: google/gemini-2.0-flash-lite-001]."
    ),
    base_url: Optional[str] = typer.Option(
        None, "--base-url", help="OpenAI-compatible endpoint [default: https://openrouter.ai/api/v1]."
    ),
    sim: bool = typer.Option(
        False, "--sim", help="Run against the built-in OpenRouter simulator on loopback (no key, no cost)."
    ),
    api_key_env: Optional[str] = typer.Option(
        None, "--api-key-env",
        help="Environment variable holding the key [default: OPENROUTER_API_KEY, sent to OpenRouter only]."
    ),
    rpm: Optional[float] = typer.Option(None, "--rpm", help=_RPM_HELP),
    tpm: Optional[float] = typer.Option(None, "--tpm", help=_TPM_HELP),
    concurrency: Optional[int] = typer.Option(
        None, "--concurrency", "-c", help=f"Requests in flight at most [default: {DEFAULT_CONCURRENCY}]."
    ),
    max_attempts: Optional[int] = typer.Option(
        None, "--max-attempts", help=f"Attempts per line, the first included [default: {DEFAULT_MAX_ATTEMPTS}]."
    ),
    timeout: Optional[float] = typer.Option(
        None, "--timeout", help=f"Seconds per attempt [default: {DEFAULT_TIMEOUT_S:g}]."
    ),
    max_cost: Optional[float] = typer.Option(
        None, "--max-cost",
        help="The job's budget in USD, earlier runs of this output included: never passed (needs max_tokens).",
    ),
    limit: Optional[int] = typer.Option(
        None, "--limit", help="Run only the first N lines (a trial before the whole job)."
    ),
    retry_failed: bool = typer.Option(
        False, "--retry-failed",
        help="Also retry lines that failed for good (invalid_request, content_filtered, invalid_output)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Resume into an output made with another input, model or parameters."
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar or periodic log lines."),
    param: list[str] = typer.Option(
        [], "-p", "--param", help="Request parameter key=value (JSON when it parses: -p temperature=0)."
    ),
    log: Optional[Path] = typer.Option(
        None, "--log", help="Write one JSON line per attempt to this file (why each id failed or waited)."
    ),
    keep_fields: Optional[str] = typer.Option(
        None, "--keep-fields", help="Comma-separated input fields to copy into each record's metadata."
    ),
    mode: Optional[str] = typer.Option(
        None, "--mode",
        help="sync (one request at a time) or batch (the provider's Batch API: about half price, minutes to hours) "
             "[default: sync]."
    ),
    poll_interval: Optional[float] = typer.Option(
        None, "--poll-interval", help="Batch mode: seconds between polls of an open batch, jittered [default: 60]."
    ),
    purge: bool = typer.Option(
        False, "--purge", help="Batch mode: delete each batch at the provider once its records are written."
    ),
    system: Optional[str] = typer.Option(None, "--system", help=_SYSTEM_HELP),
    template: Optional[str] = typer.Option(None, "--template", help=_TEMPLATE_HELP),
    ray: Optional[str] = typer.Option(
        None, "--ray", metavar="auto|ADDRESS",
        help="Spread the job over a Ray cluster: auto (RAY_ADDRESS, else a local one) or host:port / ray://... (needs "
             "batchrun[ray])."
    ),
    shards: Optional[int] = typer.Option(
        None, "--shards", help="Shards under --ray [default: the output's, else the cluster's CPUs]."
    ),
) -> None:
    """Run a job: every input line becomes one request; results and errors are appended as they finish.

    Running the same job again resumes it. Exit codes: 0 all succeeded, 1 some lines failed,
    2 usage or configuration error, 3 stopped early with lines left unsent (auth, credits,
    model, budget, network, disk), 130 interrupted (143 on SIGTERM).
    """
    overrides: dict[str, Any] = {
        "output": output, "model": model, "base_url": "sim" if sim else base_url,
        "api_key_env": api_key_env, "rpm": rpm,
        "tpm": tpm, "concurrency": concurrency, "max_attempts": max_attempts, "timeout_s": timeout,
        "max_cost_usd": max_cost, "limit": limit, "retry_failed": retry_failed or None,
        "force": force or None, "params": _parse_params(param), "log_path": log,
        "keep_fields": tuple(f.strip() for f in keep_fields.split(",") if f.strip()) if keep_fields else None,
        "mode": mode, "poll_interval_s": poll_interval, "purge": purge or None,
        "system": system, "template": template,
        "ray_address": ray, "shards": shards,
    }
    config = load_config(target, overrides)
    display = _Display(progress=not no_progress)
    try:
        result = run_job(config, on_event=display)
    finally:
        display.close()
    for line in result.summary.lines():
        _say(f"batchrun: {line}")
    written_errors = result.errors.exists() and result.errors.stat().st_size
    _say(f"batchrun: results in {result.output}" + (f", errors in {result.errors}" if written_errors else ""))
    code = result.exit_code
    if code in (130, 143):
        _say("batchrun: interrupted; run the same command again to resume")
    elif result.message:
        _say(f"batchrun: {result.message}")
    raise typer.Exit(code)


_WATCH_DEFAULT_S = 2.0


def _watch_value_optional(args: list[str]) -> list[str]:
    """Give a bare ``status --watch`` its default interval (click options cannot take an optional value)."""
    if "status" not in args or "--watch" not in args:
        return args
    out = list(args)
    for index in range(len(out) - 1, -1, -1):
        if out[index] != "--watch":
            continue
        following = out[index + 1] if index + 1 < len(out) else None
        try:
            float(following)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            out.insert(index + 1, f"{_WATCH_DEFAULT_S:g}")
    return out


@app.command()
def status(
    output: Path = typer.Argument(..., help="The results file of a job (also while it runs)."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
    watch: Optional[float] = typer.Option(
        None, "--watch", metavar="[SECONDS]",
        help=f"Refresh every SECONDS (default {_WATCH_DEFAULT_S:g}) until Ctrl-C.",
    ),
) -> None:
    """Where a job stands, from its output files alone: counts, tokens, cost, latency, rate, ETA."""
    if watch is not None and watch <= 0:
        raise ConfigError(f"--watch needs a number of seconds > 0, got {watch:g}")
    clear = sys.stdout.isatty()
    try:
        while True:
            current = job_status(output)
            if as_json:
                text = orjson.dumps(current.to_dict(), option=orjson.OPT_INDENT_2).decode()
            else:
                text = "\n".join(current.lines())
            if watch is not None and clear:
                sys.stdout.write("\x1b[H\x1b[2J")  # home and clear: redraw in place
            print(text, flush=True)
            if watch is None:
                return
            time.sleep(watch)
    except KeyboardInterrupt as exc:
        raise typer.Exit(0) from exc


@app.command()
def estimate(
    target: Path = typer.Argument(..., help="A job file (.toml) or an input file (.jsonl, .jsonl.gz, .csv)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model for lines that name none."),
    base_url: Optional[str] = typer.Option(
        None, "--base-url", help="The server whose prices --fetch-prices asks for (as for run)."
    ),
    rpm: Optional[float] = typer.Option(None, "--rpm", help=_RPM_HELP),
    tpm: Optional[float] = typer.Option(None, "--tpm", help=_TPM_HELP),
    concurrency: Optional[int] = typer.Option(
        None, "--concurrency", "-c", help=f"Requests in flight at most [default: {DEFAULT_CONCURRENCY}]."
    ),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N lines, as run --limit would."),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="The run's results file (ids it already has are not counted)."
    ),
    param: list[str] = typer.Option([], "-p", "--param", help="Request parameter key=value, as for run."),
    as_json: bool = typer.Option(False, "--json", help="Print the estimate as JSON."),
    fetch_prices: bool = typer.Option(
        False, "--fetch-prices",
        help="Ask the server's GET /models for prices now (the one network call); otherwise the list the last run "
             "cached is used."
    ),
    system: Optional[str] = typer.Option(None, "--system", help=_SYSTEM_HELP),
    template: Optional[str] = typer.Option(None, "--template", help=_TEMPLATE_HELP),
) -> None:
    """A dry run: requests, input tokens, worst-case output tokens, cost range and duration.

    Sends no request, and touches the network only with --fetch-prices.
    """
    from batchrun.estimate import estimate as estimate_job
    from batchrun.estimate import price_book

    overrides: dict[str, Any] = {
        "output": output, "model": model, "rpm": rpm, "tpm": tpm, "concurrency": concurrency,
        "limit": limit, "params": _parse_params(param), "base_url": base_url,
        "system": system, "template": template,
    }
    config = load_config(target, overrides)
    result = estimate_job(config, price_book(config, fetch=fetch_prices))
    if as_json:
        print(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        for line in result.lines():
            print(line)


@app.command()
def report(
    output: Path = typer.Argument(..., help="The results file of a job."),
    destination: Optional[Path] = typer.Option(
        None, "-o", "--output", help="HTML file to write [default: <stem>.report.html beside the results]."
    ),
) -> None:
    """Write one self-contained HTML report (inline SVG plots, no network needed to open it)."""
    from batchrun.report import write_report

    written = write_report(output, destination)
    print(f"report written to {written}")


@app.command()
def show(
    output: Path = typer.Argument(..., help="The results file of a job."),
    custom_id: str = typer.Argument(..., metavar="ID", help="The custom_id (or id) of one input line."),
    as_json: bool = typer.Option(False, "--json", help="Print the record and the request as JSON."),
) -> None:
    """Print one id's final record (status, attempts, usage, response or error) and the request sent."""
    from batchrun.show import show as show_id

    shown = show_id(output, custom_id)
    if as_json:
        print(orjson.dumps(shown.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        for line in shown.lines():
            print(line)


@app.command("export")
def export_command(
    output: Path = typer.Argument(..., help="The results file of a job."),
    fmt: Optional[str] = typer.Option(
        None, "--format", "-f", help="csv or jsonl [default: from -o's suffix, else csv]."
    ),
    input_order: bool = typer.Option(
        False, "--input-order", help="One row per input row, in input order (rows not run yet: status not_run)."
    ),
    destination: Optional[Path] = typer.Option(
        None, "-o", "--output", help="File to write [default: <stem>.export.<format> beside the results]."
    ),
    input_path: Optional[Path] = typer.Option(
        None, "--input", help="The input file, if it moved since the run [default: the one in the manifest]."
    ),
) -> None:
    """Write a labeled dataset: each input row's fields with its result's text (or parsed object), status, cost."""
    from batchrun.export import export

    if fmt is None:
        fmt = "jsonl" if destination is not None and destination.suffix == ".jsonl" else "csv"
    written = export(output, fmt=fmt, destination=destination, input_order=input_order,  # type: ignore[arg-type]
                     input_path=input_path)
    extra = f" ({written.not_run:,} not run yet)" if written.not_run else ""
    _say(f"batchrun: {written.rows:,} rows written to {written.path}{extra}")


@app.command("sim")
def sim_command(
    port: int = typer.Option(8088, "--port", help="Port on 127.0.0.1 (0 picks a free one)."),
    latency: float = typer.Option(0.0, "--latency", help="Seconds before each answer."),
    jitter: float = typer.Option(0.0, "--jitter", help="Extra random seconds, uniform in [0, jitter]."),
    rpm: Optional[float] = typer.Option(None, "--rpm", help="Enforce this many requests per window (429 above)."),
    tpm: Optional[float] = typer.Option(None, "--tpm", help="Enforce this many tokens per window."),
    rate_window: float = typer.Option(60.0, "--rate-window", help="Length of the rate window in seconds."),
    fault: list[str] = typer.Option(
        [], "--fault", help="Inject a fault at a rate, e.g. --fault 429=0.02 --fault 500=0.01."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for latency jitter and faults."),
    retry_after: float = typer.Option(1.0, "--retry-after", help="Retry-After seconds sent with injected faults."),
    upstream_429_headers: str = typer.Option(
        "retry-after", "--upstream-429-headers",
        help="How the 429 fault (an upstream provider's, as OpenRouter relays it) carries X-RateLimit-*: retry-after "
             "(not at all), ratelimit (in the headers), metadata (in error.metadata.headers) or mix (the three in "
             "turn)."
    ),
    credits: Optional[float] = typer.Option(None, "--credits", help="USD of credits; 402 once spent."),
    api_key: list[str] = typer.Option([], "--api-key", help="Accept only these keys (default: any)."),
    dialect: str = typer.Option(
        "openrouter", "--dialect",
        help="openrouter (/api/v1, usage.cost, /key), openai (/v1, no cost, unknown fields refused) or plain (/v1, no "
             "cost, no key: llama.cpp, vLLM, Ollama)."
    ),
    no_cost: bool = typer.Option(
        False, "--no-cost", help="Send usage.cost as null (OpenRouter allows it): clients price tokens themselves."
    ),
    tls_cert: Optional[Path] = typer.Option(
        None, "--tls-cert", metavar="FILE",
        help="PEM certificate (chain): serve HTTPS instead of HTTP (needs --tls-key)."
    ),
    tls_key: Optional[Path] = typer.Option(None, "--tls-key", metavar="FILE", help="PEM private key for --tls-cert."),
    no_batch_api: bool = typer.Option(
        False, "--no-batch-api", help="Serve no /batches routes (a server without a Batch API)."
    ),
    batch_validating: float = typer.Option(
        0.5, "--batch-validating", metavar="S",
        help="Batch API: seconds a new batch stays validating (then the second-stage checks run)."
    ),
    batch_processing: float = typer.Option(
        3.0, "--batch-processing", metavar="S", help="Batch API: seconds from create to completed."
    ),
    batch_visibility: float = typer.Option(
        1.0, "--batch-visibility", metavar="S",
        help="Batch API: seconds a new batch answers 404 on GET and is missing from lists."
    ),
    batch_first_visibility: Optional[float] = typer.Option(
        None, "--batch-first-visibility", metavar="S",
        help="Batch API: the first batch's own visibility lag (crash-recovery demos)."
    ),
    batch_list_cache: float = typer.Option(
        10.0, "--batch-list-cache", metavar="S", help="Batch API: seconds a list answer is cached per query string."
    ),
    batch_expiry: Optional[float] = typer.Option(
        None, "--batch-expiry", metavar="S",
        help="Batch API: rows not run this long after create expire (default 24 h, 96 h on Google)."
    ),
    batch_cancel: float = typer.Option(
        0.5, "--batch-cancel", metavar="S", help="OpenAI batches: seconds cancelling lasts."
    ),
    batch_row_fault: list[str] = typer.Option(
        [], "--batch-row-fault", metavar="KIND=RATE",
        help="Fail batch rows at a rate: 429, 500, timeout (row error) or 400 (response.status_code)."
    ),
    batch_fault: list[str] = typer.Option(
        [], "--batch-fault", metavar="KIND=RATE",
        help="Faults of the batch routes: 429 (Retry-After), 500, drop (done, reply lost)."
    ),
    batch_lost_replies: int = typer.Option(
        0, "--batch-lost-replies", metavar="N", help="The first N batch creates persist their batch but drop the reply."
    ),
    batch_max_requests: Optional[int] = typer.Option(
        None, "--batch-max-requests", metavar="N",
        help="Requests per batch (default 5,000 OpenRouter, 50,000 OpenAI); 413 above."
    ),
    batch_max_bytes: int = typer.Option(
        200_000_000, "--batch-max-bytes", metavar="N", help="Bytes per batch create or file; 413 above."
    ),
    batch_token_limit: Optional[int] = typer.Option(
        None, "--batch-token-limit", metavar="N",
        help="OpenAI batches: enqueued prompt tokens per model before token_limit_exceeded."
    ),
) -> None:
    """Serve the OpenRouter-faithful simulator on loopback (for demos and tests), Batch APIs included."""
    from batchrun.sim import SimConfig
    from batchrun.sim.__main__ import serve_forever
    from batchrun.sim.config import (
        BATCH_FAULT_KINDS,
        BATCH_ROW_FAULT_KINDS,
        parse_faults,
        parse_rates,
    )
    from batchrun.sim.server import server_ssl_context

    try:
        config = SimConfig(
            port=port, latency_s=latency, latency_jitter_s=jitter, rpm=rpm, tpm=tpm,
            rate_window_s=rate_window, faults=parse_faults(fault), seed=seed, retry_after_s=retry_after,
            upstream_429_headers=upstream_429_headers,
            credits_usd=credits, api_keys=frozenset(api_key) if api_key else None,
            dialect=dialect,  # type: ignore[arg-type]  # checked by SimConfig
            report_cost=not no_cost,
            tls_cert=None if tls_cert is None else str(tls_cert),
            tls_key=None if tls_key is None else str(tls_key),
            batch_api=not no_batch_api, batch_validating_s=batch_validating,
            batch_processing_s=batch_processing, batch_visibility_s=batch_visibility,
            batch_first_visibility_s=batch_first_visibility, batch_list_cache_s=batch_list_cache,
            batch_expiry_s=batch_expiry, batch_cancel_s=batch_cancel,
            batch_row_faults=parse_rates(batch_row_fault, BATCH_ROW_FAULT_KINDS, "--batch-row-fault"),
            batch_faults=parse_rates(batch_fault, BATCH_FAULT_KINDS, "--batch-fault"),
            batch_lost_replies=batch_lost_replies, batch_max_requests=batch_max_requests,
            batch_max_bytes=batch_max_bytes, batch_enqueued_token_limit=batch_token_limit,
        )
        server_ssl_context(config)  # a bad PEM file is a usage error, not a traceback once serving
    except ValueError as exc:
        raise ConfigError(f"batchrun sim: {exc}") from exc
    except OSError as exc:  # ssl.SSLError included
        raise ConfigError(f"batchrun sim: cannot load --tls-cert {tls_cert} with --tls-key {tls_key}: {exc}") from exc
    raise typer.Exit(serve_forever(config))


@app.command()
def version() -> None:
    """Print batchrun's version."""
    print(__version__)


def main() -> None:
    """Entry point: one clear line for any user mistake, never a traceback."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=_watch_value_optional(sys.argv[1:]), prog_name="batchrun", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except NoArgsIsHelpError as exc:  # bare `batchrun`: the help, as click prints it, and exit 2
        exc.show()
        sys.exit(exc.exit_code)
    except UsageError as exc:
        name = exc.ctx.info_name if exc.ctx and exc.ctx.info_name != "batchrun" else None
        hint = f" (see: batchrun {name} --help)" if name else " (see: batchrun --help)"
        _say(f"batchrun: error: {exc.format_message()}{hint}")
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)
    except ClickException as exc:
        _say(f"batchrun: error: {exc.format_message()}")
        sys.exit(exc.exit_code)
    except BatchrunError as exc:
        _say(f"batchrun: error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    # Without standalone mode, click returns the code of a typer.Exit instead of raising it.
    sys.exit(code if isinstance(code, int) else 0)
