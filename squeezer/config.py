"""Frozen, validated configuration: one dataclass per concern.

Every field carries its help text in its metadata, so the CLI flags (`--max-payload-bytes`) and the
environment variables (`SQUEEZER_MAX_PAYLOAD_BYTES`) are derived from the same definition and can never
drift apart. Nothing here reads the environment at import time: `from_sources` does, when called.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_type_hints

ENV_PREFIX = "SQUEEZER_"


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which setting to change and how."""


PROFILES = ("latency", "throughput")  # what `squeezer optimize` makes fast (also `serve --optimize-profile`)


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
    shutdown_grace: float = setting(30.0, "Seconds to finish accepted requests after SIGTERM before exiting.")

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, "port", f"must be between 0 and 65535, got {self.port}")
        _check(self.max_payload_bytes > 0, "max_payload_bytes", "must be a positive number of bytes")
        _check(self.api_key is None or len(self.api_key) >= 8, "api_key", "must be at least 8 characters")
        _check(self.shutdown_grace >= 0, "shutdown_grace", "must be 0 or more seconds")


@dataclass(frozen=True)
class ModelConfig:
    """How model sources are resolved and loaded."""

    task: str | None = setting(None, "Task to serve instead of the one detected from the model.")
    allow_pickle: bool = setting(False, "Allow loading pickle weights (.bin); only for sources you trust.")
    trust_remote_code: bool = setting(False, "Run model code shipped with the model; only for sources you trust.")
    max_memory_mb: int = setting(0, "Memory budget for loaded models in MiB; the least recently used is unloaded past it (0: none).")
    optimize: bool = setting(False, "Compile each model with `squeezer optimize` (or reuse its cached artifact) before serving it.")
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

    backend: str = setting("torch", "Backend for model folders (artifacts from `squeezer optimize` always use onnxruntime).", choices=("torch", "onnxruntime"))
    threads: int = setting(0, "Intra-op threads for the backend; 0 means the cores available to this process.")
    instances: int = setting(
        0,
        "Batches run at once, each on its share of the threads (like Triton's instance count); 0 = auto: one per "
        "core for a CPU artifact optimized for throughput, else 1 (the torch backend runs one).",
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
    # 1.05 against 1.1: +5% requests/s and a lower p99 for MiniLM under 32 clients (bench/bench_server.py).
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

    def __post_init__(self) -> None:
        for name in ("result_cache_entries", "result_cache_mb", "token_cache_entries"):
            _check(getattr(self, name) >= 0, name, "must be 0 (disabled) or a positive count")


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
