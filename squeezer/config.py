"""Frozen, validated configuration: one dataclass per concern.

Every field carries its help text in its metadata, so the CLI flags (`--max-payload-bytes`) and the
environment variables (`SQUEEZER_MAX_PAYLOAD_BYTES`) are derived from the same definition and can never
drift apart. Nothing here reads the environment at import time: `from_sources` does, when called.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

ENV_PREFIX = "SQUEEZER_"


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which setting to change and how."""


PROFILES = ("latency", "throughput")  # what `squeezer optimize` makes fast (also `serve --optimize-profile`)


def cache_dir(kind: str) -> Path:
    """Where squeezer keeps one kind of cache (`optimize`: artifacts, `gguf`: converted GGUF metadata):
    $XDG_CACHE_HOME/squeezer/KIND, else ~/.cache/squeezer/KIND, read when asked (tests point it elsewhere)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "squeezer" / kind


def setting(default: Any, help: str, *, choices: tuple[str, ...] | None = None) -> Any:
    """Declare a config field with the help text shared by its CLI flag and environment variable."""
    return field(default=default, metadata={"help": help, "choices": choices})


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _check(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{flag_name(name)} ({env_name(name)}): {message}")


@dataclass(frozen=True)
class ServerConfig:
    """How the HTTP server listens and what it accepts."""

    host: str = setting("127.0.0.1", "Address to bind.")
    port: int = setting(8000, "Port to bind.")
    max_payload_bytes: int = setting(2_000_000, "Largest request body accepted, in bytes (413 beyond).")
    log_level: str = setting("info", "Log level.", choices=("debug", "info", "warning", "error"))
    log_format: str = setting("text", "Access log format: one line per request, as text or JSON.", choices=("text", "json"))
    api_key: str | None = setting(None, "Require `Authorization: Bearer KEY` on inference and admin routes.")
    api_key_file: str | None = setting(
        None, "Read API keys from this file, one per line (keeps them out of argv and `ps`); each key is a tenant "
        "whose cached answers and prompts no other key can see.",
    )
    admin_key: str | None = setting(None, "Require this key, not --api-key, to load and unload models.")
    allowed_hosts: str = setting(
        "", "Host headers accepted, comma-separated (a defence against DNS rebinding); empty: the loopback names "
        "when --host is a loopback address, else any.",
    )
    cors_origins: str = setting(
        "", "Browser origins that may call the API, comma-separated ('*': any). A request from any other origin gets "
        "403, so a web page cannot drive a server on this machine.",
    )
    show_paths: bool = setting(False, "Show models' source paths on /info and /models (hidden by default).")
    reasoning: str = setting(
        "split", "A reasoning model's <think> block on the chat route: split into `reasoning_content`, or inline in the content.",
        choices=("split", "inline"),
    )
    shutdown_grace: float = setting(30.0, "Seconds to finish accepted requests after SIGTERM before exiting.")
    read_timeout: float = setting(
        30.0, "Seconds a client may take to send a request's head, and again its body (408 beyond; 0: no limit).",
    )

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, "port", f"must be between 0 and 65535, got {self.port}")
        _check(self.max_payload_bytes > 0, "max_payload_bytes", "must be a positive number of bytes")
        _check(self.api_key is None or len(self.api_key) >= 8, "api_key", "must be at least 8 characters")
        _check(self.api_key is None or self.api_key_file is None, "api_key_file", "give the key or its file, not both")
        _check(self.admin_key is None or len(self.admin_key) >= 8, "admin_key", "must be at least 8 characters")
        _check(self.shutdown_grace >= 0, "shutdown_grace", "must be 0 or more seconds")
        _check(self.read_timeout >= 0, "read_timeout", "must be 0 (no limit) or more seconds")


@dataclass(frozen=True)
class ModelConfig:
    """How model sources are resolved and loaded."""

    task: str | None = setting(None, "Task to serve instead of the one detected from the model.")
    allow_pickle: bool = setting(False, "Allow loading pickle weights (.bin); only for sources you trust.")
    trust_remote_code: bool = setting(False, "Run model code shipped with the model; only for sources you trust.")
    max_memory_mb: int = setting(0, "Memory budget for loaded models in MiB; the least recently used is unloaded past it (0: none).")
    optimize: bool = setting(False, "Compile each model with `squeezer optimize` (or reuse its cached artifact) before serving it.")
    optimize_in_background: bool = setting(
        True, "Serve each model at once as loaded, compile it meanwhile, and swap the artifact in once it passes the "
        "accuracy gate (accepted work finishes on the old backend; the next start reuses the cached artifact). "
        "--no-optimize-in-background serves models as loaded; --optimize compiles before serving instead.",
    )
    optimize_profile: str = setting(
        "latency", "What --optimize makes fast: latency (one request at a time) or throughput (many requests batched).",
        choices=PROFILES,
    )

    def __post_init__(self) -> None:
        from squeezer.tasks import ALL_TASKS  # tasks import nothing from config: no cycle

        _check(self.max_memory_mb >= 0, "max_memory_mb", "must be 0 (no budget) or a size in MiB")
        _check(self.optimize_profile in PROFILES, "optimize_profile",
               f"must be {' or '.join(PROFILES)}, got {self.optimize_profile!r}")
        _check(
            self.task is None or self.task in ALL_TASKS,
            "task",
            f"unknown task {self.task!r}; choose one of {', '.join(sorted(ALL_TASKS))}",
        )


@dataclass(frozen=True)
class BackendConfig:
    """Which runtime executes the model, and with how many threads."""

    backend: str = setting("torch", "Backend for model folders (an artifact from `squeezer optimize` runs on the runtime its report names).", choices=("torch", "onnxruntime"))
    threads: int = setting(0, "Intra-op threads for the backend; 0 means the cores available to this process.")
    instances: int = setting(
        0,
        "Batches run at once, each on its share of the threads (like Triton's instance count); 0 = auto: one per "
        "core for a CPU artifact, whatever its profile (a batch alone runs on every core), else 1 (the torch backend "
        "runs one).",
    )

    def __post_init__(self) -> None:
        _check(self.threads >= 0, "threads", f"must be 0 (auto) or a positive count, got {self.threads}")
        _check(self.instances >= 0, "instances", f"must be 0 (auto) or a positive count, got {self.instances}")


@dataclass(frozen=True)
class BatchingConfig:
    """How concurrent requests are grouped into batches, and how much work may wait."""

    max_batch_tokens: int = setting(16384, "Token budget of one batch (padded length x sequences).")
    max_batch_size: int = setting(64, "Most sequences in one batch.")
    max_wait_ms: float = setting(2.0, "How long a batch may wait for more requests while the model is busy.")
    # 1.05 against 1.1: +5% requests/s and a lower p99 for MiniLM under 32 clients (wrk, one sentence each); 1.3 and
    # 1.6 made bigger batches but fewer requests/s (OpenVINO bf16: 250 and 218 against 278).
    max_padding_ratio: float = setting(1.05, "Most padded tokens per real token in a batch; other lengths wait for the next batch.")
    max_queue: int = setting(1024, "Most sequences waiting per model; beyond it requests get 429.")

    def __post_init__(self) -> None:
        _check(self.max_batch_size >= 1, "max_batch_size", "must be at least 1")
        _check(self.max_batch_tokens >= 1, "max_batch_tokens", "must be at least 1")
        _check(self.max_wait_ms >= 0, "max_wait_ms", "must be 0 or more milliseconds")
        _check(self.max_padding_ratio >= 1, "max_padding_ratio", "must be at least 1 (1 allows no padding)")
        _check(self.max_queue >= 1, "max_queue", "must be at least 1")


@dataclass(frozen=True)
class LimitsConfig:
    """What one request may ask for, and how long it may wait."""

    max_inputs: int = setting(256, "Most inputs in one request (413 beyond).")
    max_input_chars: int = setting(100_000, "Most characters in one input text (422 beyond).")
    request_timeout: float = setting(60.0, "Seconds a request may wait for the model before a 504; 0 disables.")

    def __post_init__(self) -> None:
        _check(self.max_inputs >= 1, "max_inputs", "must be at least 1")
        _check(self.max_input_chars >= 1, "max_input_chars", "must be at least 1")
        _check(self.request_timeout >= 0, "request_timeout", "must be 0 (none) or a number of seconds")


@dataclass(frozen=True)
class CacheConfig:
    """Caches that skip repeated work: whole answers, and tokenizations of repeated texts."""

    result_cache_entries: int = setting(4096, "Most answers kept for identical repeated requests (0 disables).")
    result_cache_mb: int = setting(64, "Most MiB of answers kept in the result cache.")
    token_cache_entries: int = setting(16384, "Most tokenized texts kept per model (0 disables).")
    token_cache_mb: int = setting(64, "Most MiB of tokenizations (texts included) kept per model.")

    def __post_init__(self) -> None:
        for name in ("result_cache_entries", "result_cache_mb", "token_cache_entries", "token_cache_mb"):
            _check(getattr(self, name) >= 0, name, "must be 0 (disabled) or a positive count")


@dataclass(frozen=True)
class DecodingConfig:
    """How generation requests share a causal LM (continuous batching) and what one request may ask for."""

    max_batch_sequences: int = setting(16, "Most sequences decoded together in one step.")
    max_tokens_in_flight: int = setting(
        32768,
        "KV-cache budget of the running batch, in tokens: sequences x the longest one's prompt + max new tokens "
        "(the cache holds that rectangle). Newcomers wait past it.",
    )
    max_prefill_tokens: int = setting(
        512,
        "Most prompt tokens prefilled in one forward. A burst of newcomers past it is prefilled in several "
        "forwards with decode steps between them, so the first of them start streaming sooner (a longer "
        "prompt still runs, alone).",
    )
    max_input_tokens: int = setting(1024, "Most prompt tokens in one generation request (422 beyond).")
    max_total_tokens: int = setting(2048, "Most prompt + new tokens in one generation request (422 beyond).")
    max_new_tokens: int = setting(1024, "Most new tokens one generation request may ask for (422 beyond).")
    default_new_tokens: int = setting(100, "New tokens generated when a request does not set max_new_tokens.")
    max_waiting: int = setting(128, "Most generation requests waiting for a slot; beyond it requests get 429.")
    prefix_cache_mb: int = setting(
        256,
        "Memory (MiB) for the keys and values of finished sequences, reused by later prompts that begin the same "
        "way (chat template and system prompt, earlier turns of a conversation): only the rest is prefilled. "
        "Compiled (ONNX) decoders; 0 turns it off.",
    )

    def __post_init__(self) -> None:
        for name in ("max_batch_sequences", "max_prefill_tokens", "max_input_tokens", "max_new_tokens", "default_new_tokens", "max_waiting"):
            _check(getattr(self, name) >= 1, name, "must be at least 1")
        _check(self.prefix_cache_mb >= 0, "prefix_cache_mb", "must be at least 0 (0 turns the prefix cache off)")
        _check(
            self.max_total_tokens > self.max_input_tokens,
            "max_total_tokens",
            f"must exceed --max-input-tokens ({self.max_input_tokens}) to leave room for new tokens",
        )
        _check(
            self.max_tokens_in_flight >= self.max_total_tokens,
            "max_tokens_in_flight",
            f"must be at least --max-total-tokens ({self.max_total_tokens}), or the longest request could never run",
        )
        _check(
            self.default_new_tokens <= self.max_new_tokens,
            "default_new_tokens",
            f"must not exceed --max-new-tokens ({self.max_new_tokens})",
        )

    def new_tokens_for(self, prompt_tokens: int, asked: int | None, context: int) -> int:
        """A request's max new tokens, or a 422 naming the limit it passes; `context` is the model's."""
        from squeezer.tasks.base import InputError  # tasks import nothing from config: no cycle

        total = min(self.max_total_tokens, context)
        inputs = min(self.max_input_tokens, total - 1)
        if prompt_tokens == 0:
            raise InputError("inputs: the prompt has no tokens")
        if prompt_tokens > inputs:
            raise InputError(f"inputs: {prompt_tokens} tokens exceed the maximum of {inputs} input tokens")
        if asked is not None and asked > self.max_new_tokens:
            raise InputError(f"parameters.max_new_tokens: must be at most {self.max_new_tokens}, got {asked}")
        new_tokens = asked or min(self.default_new_tokens, total - prompt_tokens)
        if prompt_tokens + new_tokens > total:
            raise InputError(
                f"parameters.max_new_tokens: {prompt_tokens} input tokens + {new_tokens} new tokens exceed the "
                f"maximum of {total} total tokens"
            )
        return new_tokens


AUTOSCALE = re.compile(r"^(\d+):(\d+)$")


@dataclass(frozen=True)
class ClusterConfig:
    """Scaling out with `--ray`: the same HTTP API as a Ray Serve application (the extra squeezer[ray]); see
    docs/scaling.md."""

    ray: bool = setting(False, "Serve as a Ray Serve application: a local Ray instance, or the cluster at --ray-address.")
    ray_address: str | None = setting(None, "Address of a running Ray cluster (e.g. 'auto', 'ray://head:10001'); none starts a local one.")
    replicas: int = setting(1, "Replicas of the server, each with every model and its own batcher (unless --autoscale).")
    autoscale: str = setting("", "MIN:MAX replicas, scaled on ongoing requests per replica; replaces --replicas.")
    target_ongoing_requests: float = setting(16.0, "Ongoing requests per replica that --autoscale aims at (enough to fill batches).")
    upscale_delay: float = setting(
        30.0, "Seconds the load must stay above --target-ongoing-requests before --autoscale adds replicas (Ray's "
        "upscale_delay_s).",
    )
    downscale_delay: float = setting(
        600.0, "Seconds the load must stay below --target-ongoing-requests before --autoscale removes replicas (Ray's "
        "downscale_delay_s): long, so a lull between bursts does not drop replicas the next burst needs.",
    )
    autoscale_window: float = setting(
        30.0, "Seconds over which --autoscale averages ongoing requests (Ray's look_back_period_s); Ray hears of them "
        "every third of it or every 10 s, whichever is sooner.",
    )
    max_ongoing_requests: int = setting(256, "Most requests one replica takes at once; Ray queues the rest (its default of 5 would starve the batcher).")
    replica_cpus: float = setting(1.0, "CPUs Ray reserves per replica; --threads 0 means this many threads per replica.")
    models_per_replica: int = setting(
        0, "Spread the models over replicas with Ray Serve's model multiplexing: each replica loads at most this "
        "many, on first use, and requests go to a replica that holds their model; 0: every replica loads every model.",
    )

    def __post_init__(self) -> None:
        _check(self.replicas >= 1, "replicas", f"must be at least 1, got {self.replicas}")
        bounds = AUTOSCALE.match(self.autoscale)
        _check(not self.autoscale or (bounds is not None and 0 <= int(bounds[1]) <= int(bounds[2]) and int(bounds[2]) >= 1),
               "autoscale", f"must be MIN:MAX with 0 <= MIN <= MAX and MAX >= 1, got {self.autoscale!r}")
        _check(self.target_ongoing_requests > 0, "target_ongoing_requests", "must be positive")
        for name in ("upscale_delay", "downscale_delay"):
            _check(getattr(self, name) >= 0, name, "must be 0 or more seconds")
        _check(self.autoscale_window > 0, "autoscale_window", "must be a positive number of seconds")
        _check(self.max_ongoing_requests >= 1, "max_ongoing_requests", "must be at least 1")
        _check(self.replica_cpus > 0, "replica_cpus", "must be positive")
        _check(self.models_per_replica >= 0, "models_per_replica", "must be 0 (every model) or a positive count")

    def autoscale_bounds(self) -> tuple[int, int] | None:
        """(min, max) replicas when autoscaling, else None."""
        bounds = AUTOSCALE.match(self.autoscale)
        return (int(bounds[1]), int(bounds[2])) if bounds else None


@dataclass(frozen=True)
class ServeConfig:
    """Everything `squeezer serve` is configured with, one concern per group; the CLI flags and environment
    variables come from the groups' fields (`SERVE_GROUPS`)."""

    server: ServerConfig = field(default_factory=ServerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


# ServeConfig's groups, field name -> config class (the CLI makes one argument group of each).
SERVE_GROUPS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(ServeConfig)}  # type: ignore[misc]


def read_api_keys(config: ServerConfig) -> tuple[str, ...]:
    """The API keys: --api-key, or every line of --api-key-file but blank ones and `#` comments (read once, when
    the app is built). Several keys make several tenants (see `squeezer.api.auth`); none: no key needed."""
    if config.api_key_file is None:
        return (config.api_key,) if config.api_key else ()
    try:
        text = Path(config.api_key_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--api-key-file ({env_name('api_key_file')}): cannot read it: {exc.strerror}") from None
    keys = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    _check(bool(keys), "api_key_file", "it holds no key")
    _check(all(len(key) >= 8 for key in keys), "api_key_file", "every key it holds must be at least 8 characters")
    return keys


C = TypeVar("C")


def _parse(value: str, kind: Any, name: str) -> Any:
    """Turn an environment string into the field's type."""
    if kind is bool:
        lowered = value.strip().lower()
        _check(lowered in {"1", "true", "yes", "on", "0", "false", "no", "off"}, name, f"not a boolean: {value!r}")
        return lowered in {"1", "true", "yes", "on"}
    if kind is int:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{flag_name(name)} ({env_name(name)}): not an integer: {value!r}") from None
    if kind is float:
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{flag_name(name)} ({env_name(name)}): not a number: {value!r}") from None
    return value


def field_types(cls: type) -> dict[str, Any]:
    """Each field's scalar type, with `X | None` reduced to X."""
    hints = get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        args = [a for a in getattr(kind, "__args__", ()) if a is not type(None)]
        out[f.name] = args[0] if args else kind
    return out


def from_sources(cls: type[C], values: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> C:
    """Build a config: explicit values (CLI) win over environment variables, which win over defaults."""
    values = values or {}
    environ = os.environ if environ is None else environ
    kinds = field_types(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if values.get(f.name) is not None:
            kwargs[f.name] = values[f.name]
        elif env_name(f.name) in environ:
            kwargs[f.name] = _parse(environ[env_name(f.name)], kinds[f.name], f.name)
    return cls(**kwargs)
