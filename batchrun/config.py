"""One frozen configuration per job: the job file, then the environment, then the flags.

Validated once, here, with messages that name the key and say how to fix it.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from batchrun.errors import ConfigError
from batchrun.inputs import check_text
from batchrun.pricing import Price

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MODEL",
    "DEFAULT_POLL_INTERVAL_S",
    "DEFAULT_TIMEOUT_S",
    "MODES",
    "JobConfig",
    "load_config",
    "output_paths",
]

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
DEFAULT_MODEL = "google/gemini-2.0-flash-lite-001"
DEFAULT_KEY_ENV = "OPENROUTER_API_KEY"
DEFAULT_CONCURRENCY = 16
DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_TIMEOUT_S = 300.0
# A stream silent this long (not even OpenRouter's keep-alive comments, sent every few seconds)
# is dead, whatever the per-attempt timeout still allows.
DEFAULT_STREAM_IDLE_S = 60.0
# Batch mode: seconds between polls of an open batch (jittered, and stretched while it is unchanged).
DEFAULT_POLL_INTERVAL_S = 60.0
MODES = ("sync", "batch")
SIM = "sim"
# What the server speaks beyond chat completions: "openrouter" serves GET /key and /models with
# prices, and is sent the OpenRouter key; "openai" (any other OpenAI-compatible server) does not;
# "auto" decides by the base URL (openrouter.ai, or a path ending in /api/v1).
APIS = ("auto", "openrouter", "openai")

_TOP_KEYS = frozenset({
    "input", "output", "model", "base_url", "api_key_env", "system", "template", "params",
    "limits", "headers", "pricing", "retry", "sim", "schema", "keep_fields", "schema_retries", "api",
    "mode", "purge", "ray", "shards",
})
_LIMIT_KEYS = frozenset({
    "rpm", "tpm", "concurrency", "max_attempts", "timeout_s", "stream_idle_s", "max_cost_usd",
    "poll_interval_s", "max_batch_requests",
})
_RETRY_KEYS = frozenset({"backoff_base_s", "backoff_cap_s"})


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """Everything one run needs; build it with ``load_config`` or directly (library use)."""

    input: Path
    output: Path
    model: str = DEFAULT_MODEL
    base_url: str = DEFAULT_BASE_URL  # or "sim": start the built-in simulator
    api: str = "auto"  # one of APIS
    api_key_env: str = DEFAULT_KEY_ENV
    system: str | None = None
    template: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    pricing: Mapping[str, Price] = field(default_factory=dict)
    rpm: float | None = None
    tpm: float | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout_s: float = DEFAULT_TIMEOUT_S
    stream_idle_s: float = DEFAULT_STREAM_IDLE_S  # longest silence inside a streamed reply
    max_cost_usd: float | None = None
    limit: int | None = None
    retry_failed: bool = False
    force: bool = False
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    fsync_interval_s: float = 1.0
    log_path: Path | None = None  # --log: one JSON line per attempt
    schema: Mapping[str, Any] | None = None  # replies must match it (unless a line brings its own)
    schema_retries: int = 2  # extra attempts for a reply that fails its schema
    keep_fields: tuple[str, ...] = ()  # input fields copied into each record's metadata
    sim: Mapping[str, Any] = field(default_factory=dict)  # options for the simulator under --sim
    mode: str = "sync"  # one of MODES: "batch" goes through the provider's Batch API (half price)
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S  # batch mode: how often an open batch is polled
    purge: bool = False  # batch mode: delete each batch at the provider once its records are synced
    max_batch_requests: int | None = None  # batch mode: fewer requests per batch than the provider's cap
    ray_address: str | None = None  # --ray: "auto" or a cluster address; None runs in this process
    shards: int | None = None  # --shards under --ray [default: the output's, else the cluster's CPUs]

    def __post_init__(self) -> None:
        _positive_int("concurrency", self.concurrency)
        _positive_int("max_attempts", self.max_attempts)
        _positive_number("timeout_s", self.timeout_s)
        _positive_number("stream_idle_s", self.stream_idle_s)
        _positive_number("poll_interval_s", self.poll_interval_s)
        if self.max_batch_requests is not None:
            _positive_int("max_batch_requests", self.max_batch_requests)
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not isinstance(self.purge, bool):
            raise ConfigError(f"purge must be true or false, got {self.purge!r}")
        if self.api not in APIS:
            raise ConfigError(f"api must be one of {', '.join(APIS)}, got {self.api!r}")
        for name in ("rpm", "tpm", "max_cost_usd"):
            if getattr(self, name) is not None:
                _positive_number(name, getattr(self, name))
        if isinstance(self.schema_retries, bool) or not isinstance(self.schema_retries, int) \
                or self.schema_retries < 0:
            raise ConfigError(f"schema_retries must be a whole number >= 0, got {self.schema_retries!r}")
        if self.schema is not None:
            from batchrun.schema import check_schema

            problem = check_schema(self.schema)
            if problem:
                raise ConfigError(f"schema is not a valid JSON Schema: {problem}")
        if self.ray_address is not None and (not isinstance(self.ray_address, str) or not self.ray_address):
            raise ConfigError(
                f"ray must be \"auto\" or a cluster address (host:port, ray://...), got {self.ray_address!r}"
            )
        if self.shards is not None:
            _positive_int("shards", self.shards)
            if self.ray_address is None:
                raise ConfigError("shards needs ray: add --ray auto (or --ray ADDRESS), or drop --shards")
        if self.ray_address is not None and self.mode != "sync":
            raise ConfigError("--ray spreads a sync job over a cluster; --mode batch hands the job to the "
                              "provider's Batch API: drop one of them")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 0):
            raise ConfigError(f"limit must be a whole number >= 0, got {self.limit!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError("model must be a non-empty string, e.g. --model openai/gpt-4o-mini")
        if self.base_url != SIM and not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https:// (or be \"sim\"), got {self.base_url!r}")

    @property
    def use_sim(self) -> bool:
        return self.base_url == SIM

    @property
    def builtin_prices(self) -> bool:
        """True where the built-in price table holds: OpenRouter (and its simulator) and OpenAI.

        A self-hosted server (llama.cpp, vLLM, Ollama) answers to any model name, the default
        included, and its tokens cost what the job's [pricing] says, or are unknown.
        """
        return self.speaks_openrouter or urlsplit(self.base_url).hostname == "api.openai.com"

    @property
    def speaks_openrouter(self) -> bool:
        """True when the server serves OpenRouter's GET /key and /models (with prices)."""
        if self.api != "auto":
            return self.api == "openrouter"
        # OpenRouter's own host, or its layout (/api/v1: the simulator, a gateway in front of it).
        parts = urlsplit(self.base_url)
        return (
            self.use_sim
            or (parts.hostname or "").endswith("openrouter.ai")
            or parts.path.rstrip("/").endswith("/api/v1")
        )

    @property
    def errors_path(self) -> Path:
        return output_paths(self.output)["errors"]


def output_paths(output: Path) -> dict[str, Path]:
    """The files of one output: results, errors, manifest and lock, side by side."""
    name = output.name
    stem = name[: -len(".jsonl")] if name.endswith(".jsonl") else name
    folder = output.parent
    return {
        "results": output,
        "errors": folder / f"{stem}.errors.jsonl",
        "manifest": folder / f"{stem}.manifest.json",
        "lock": folder / f".{stem}.lock",
    }


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")


def _positive_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise ConfigError(f"{name} must be a number > 0, got {value!r}")


def _default_output(input_path: Path) -> Path:
    name = input_path.name
    for suffix in (".jsonl.gz", ".jsonl", ".json", ".csv.gz", ".csv", ".tsv.gz", ".tsv", ".gz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return input_path.with_name(f"{name}.results.jsonl")


def _read_job(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            job = tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"job file not found: {path}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read job file {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"job file {path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(job) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {path} (known: {', '.join(sorted(_TOP_KEYS))})")
    for table, known in (("limits", _LIMIT_KEYS), ("retry", _RETRY_KEYS)):
        value = job.get(table, {})
        if not isinstance(value, dict):
            raise ConfigError(f"[{table}] in {path} must be a table")
        bad = sorted(set(value) - known)
        if bad:
            raise ConfigError(f"unknown key {bad[0]!r} in [{table}] of {path} (known: {', '.join(sorted(known))})")
    for table in ("params", "headers", "pricing", "sim"):
        if not isinstance(job.get(table, {}), dict):
            raise ConfigError(f"[{table}] in {path} must be a table")
    return dict(job)


def _sim_options(table: Mapping[str, Any], where: Path) -> dict[str, Any]:
    """The job's [sim] table, checked now by the simulator's own parser and SimConfig (one line).

    Each key is one of the simulator's flags (``python -m batchrun.sim --help``) without its
    dashes: ``latency = 0.05``, ``fault = ["429=0.02"]``, ``no_cost = true``. ``faults = [...]``
    is read as ``fault``, and ``faults = {"429" = 0.02}`` as the same list. The flags checked are
    the ones a run starts the simulator with, so what passes here starts.
    """
    if not table:
        return {}
    options = dict(table)
    faults = options.pop("faults", None)
    if isinstance(faults, dict):
        faults = [f"{kind}={rate}" for kind, rate in faults.items()]
    if faults is not None:
        given = options.get("fault", [])
        options["fault"] = [*(given if isinstance(given, list) else [given]),
                            *(faults if isinstance(faults, list) else [faults])]
    problem = _sim_problem(options)
    if problem:
        raise ConfigError(f"[sim] in {where}: {problem}")
    return options


def _sim_problem(options: Mapping[str, Any]) -> str | None:
    """What the simulator would refuse in these options, in the job file's words, or None."""
    import argparse
    import contextlib
    import io

    from batchrun.engine.preflight import sim_args  # loaded only for a job with a [sim] table
    from batchrun.sim.__main__ import config_from_args, parser

    sim_parser = parser()
    sim_parser.exit_on_error = False
    actions = {
        option[2:].replace("-", "_"): action
        for action in sim_parser._actions for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    for key, value in options.items():
        action = actions.get(key.replace("-", "_"))
        if action is None:
            return f"unknown key {key!r} (known: {', '.join(sorted(actions))})"
        if action.nargs == 0 and not isinstance(value, bool):
            return f"{key} must be true or false, got {value!r}"
        values = value if isinstance(value, list) else [value]
        if action.nargs != 0 and not all(isinstance(v, (str, int, float)) for v in values):
            return f"{key} must be a string, a number or a list of them, got {value!r}"
        if isinstance(value, list) and not isinstance(action, argparse._AppendAction):
            return f"{key} takes one value, got a list"
    args = sim_args(options)
    try:
        sim_parser.parse_known_args(args)
    except argparse.ArgumentError as exc:
        return str(exc).replace("argument --", "")
    # SimConfig and the fault parsers say the rest (p.error: one line on stderr, then exit 2).
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            config_from_args(args)
    except SystemExit:
        message = said.getvalue().strip().splitlines()[-1].partition(": error: ")[2]
        for name, key in _SIM_CONFIG_NAMES:
            message = message.replace(name, key)  # the job file's names, not SimConfig's
        return message or "the simulator refuses these options"
    return None


# SimConfig fields named in its messages -> the [sim] keys that set them (longest name first).
_SIM_CONFIG_NAMES = (
    ("latency_jitter_s", "jitter"), ("rate_window_s", "rate_window"),
    ("retry_after_s", "retry_after"), ("latency_s", "latency"), ("hang_s", "hang"),
)


_PRICE_KEYS = frozenset({
    "prompt_per_m", "completion_per_m", "cached_per_m", "cache_write_per_m", "reasoning_per_m",
    "request_usd",
})


def _optional_float(entry: Mapping[str, Any], key: str) -> float | None:
    return None if entry.get(key) is None else float(entry[key])


def _pricing(table: Mapping[str, Any], where: str) -> dict[str, Price]:
    prices = {}
    for model, entry in table.items():
        if isinstance(entry, dict) and (bad := sorted(set(entry) - _PRICE_KEYS)):
            raise ConfigError(
                f"unknown key {bad[0]!r} in [pricing.\"{model}\"] of {where} "
                f"(known: {', '.join(sorted(_PRICE_KEYS))})"
            )
        try:
            prices[model] = Price.per_million(
                float(entry["prompt_per_m"]), float(entry["completion_per_m"]),
                _optional_float(entry, "cached_per_m"),
                cache_write=_optional_float(entry, "cache_write_per_m"),
                reasoning=_optional_float(entry, "reasoning_per_m"),
                request=_optional_float(entry, "request_usd") or 0.0,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(
                f"[pricing.\"{model}\"] in {where} needs prompt_per_m and completion_per_m (USD per 1M tokens)"
            ) from exc
    return prices


def load_config(target: Path, overrides: Mapping[str, Any] | None = None) -> JobConfig:
    """Build the config from a job file (``.toml``) or a bare input file, then apply ``overrides``.

    ``overrides`` holds flag values by JobConfig field name; None means "not given".
    ``params`` in overrides is merged over the job's ``[params]``.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    values: dict[str, Any] = {}
    if target.suffix == ".toml":
        job = _read_job(target)
        base = target.parent
        if "input" not in job:
            raise ConfigError(f"job file {target} has no input = \"...\"")
        for key in ("input", "output"):
            if key in job and not isinstance(job[key], str):
                raise ConfigError(f"{key} in {target} must be a path string")
        values["input"] = (base / job["input"]).resolve()
        if "output" in job:
            values["output"] = (base / job["output"]).resolve()
        for key in ("model", "base_url", "api", "api_key_env", "system", "template", "mode"):
            if key in job:
                if not isinstance(job[key], str):
                    raise ConfigError(f"{key} in {target} must be a string")
                values[key] = job[key]
        values["params"] = dict(job.get("params", {}))
        values["headers"] = {str(k): str(v) for k, v in job.get("headers", {}).items()}
        values["pricing"] = _pricing(job.get("pricing", {}), str(target))
        values["sim"] = _sim_options(job.get("sim", {}), target)
        if "schema" in job:
            if not isinstance(job["schema"], dict):
                raise ConfigError(f"schema in {target} must be a table (a JSON Schema)")
            values["schema"] = job["schema"]
        if "keep_fields" in job:
            fields_ = job["keep_fields"]
            if not isinstance(fields_, list) or not all(isinstance(f, str) for f in fields_):
                raise ConfigError(f"keep_fields in {target} must be a list of column names")
            values["keep_fields"] = tuple(fields_)
        if "schema_retries" in job:
            values["schema_retries"] = job["schema_retries"]
        if "purge" in job:
            values["purge"] = job["purge"]
        if "ray" in job:
            values["ray_address"] = job["ray"]
        if "shards" in job:
            values["shards"] = job["shards"]
        values.update(job.get("limits", {}))
        values.update(job.get("retry", {}))
    else:
        values["input"] = target.resolve() if target.exists() else target
    extra_params = overrides.pop("params", None)
    if extra_params:
        values["params"] = {**values.get("params", {}), **extra_params}
    values.update(overrides)
    for name in ("rpm", "tpm"):
        # 0 is "no ceiling": how a flag clears the job file's [limits] (None means "not given").
        if values.get(name) == 0 and not isinstance(values.get(name), bool):
            values[name] = None
    if "output" in overrides:
        values["output"] = Path(overrides["output"]).absolute()
    if "output" not in values:
        values["output"] = _default_output(Path(values["input"]))
    if Path(values["input"]).is_file():
        # A binary file is refused now, before a run makes its output files, not read as lines.
        check_text(Path(values["input"]))
    if Path(values["output"]).is_dir():
        raise ConfigError(
            f"the output {values['output']} is a folder: give the results file's name, "
            f"e.g. -o {Path(values['output']) / 'results.jsonl'}"
        )
    known = {f.name for f in fields(JobConfig)}
    try:
        return JobConfig(**{k: v for k, v in values.items() if k in known})
    except TypeError as exc:
        raise ConfigError(f"bad setting: {exc}") from exc


def api_key_from_env(config: JobConfig) -> str | None:
    """The API key from the environment variable the job names; never from a file.

    The default variable holds an OpenRouter key, which goes to OpenRouter only: a job against
    another server (llama.cpp, vLLM, a proxy) sends no key unless it names its own variable.
    """
    if config.api_key_env == DEFAULT_KEY_ENV and not config.speaks_openrouter:
        return None
    value = os.environ.get(config.api_key_env, "").strip()
    return value or None

