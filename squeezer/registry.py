"""The served models and their lifecycle: loading in the background, ready, failed, unloaded.

Loading never blocks the event loop (it runs in a thread); a request for a model that is loading gets the
Inference API's 503 with an estimated time, or waits for it when asked to; a request for an unloaded model
starts loading it again. A memory budget unloads the least recently used models when a load passes it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from squeezer.backends import split_outputs
from squeezer.caches import LRUCache
from squeezer.config import BackendConfig, BatchingConfig, CacheConfig, ModelConfig
from squeezer.errors import ModelNotReadyError, UnknownModelError
from squeezer.loading import GenerativeModel, LoadedModel, Model, Seq2SeqModel, load_model
from squeezer.scheduling import Batcher, BatchStats
from squeezer.scheduling.decoding import DecodeLoop, SequenceStats, StepStats
from squeezer.scheduling.decoding_config import DecodingConfig
from squeezer.scheduling.seq2seq import Seq2SeqScheduler
from squeezer.sources import ModelSource

Scheduler = Batcher | DecodeLoop | Seq2SeqScheduler


@dataclass
class Hooks:
    """Where schedulers report what they did (the metrics listen here); each gets the model id first."""

    on_batch: Callable[[str, BatchStats], None] | None = None
    on_step: Callable[[str, StepStats], None] | None = None
    on_finish: Callable[[str, SequenceStats], None] | None = None

    def bind(self, name: str, model_id: str) -> Callable[[Any], None] | None:
        hook = getattr(self, name)
        return (lambda stats: hook(model_id, stats)) if hook else None

DEFAULT_LOAD_ESTIMATE = 20.0  # seconds, until a model has loaded once and we know better


@dataclass
class ModelEntry:
    """One served model and where it is in its life."""

    source: ModelSource
    state: str = "unloaded"  # unloaded -> loading -> ready | failed; ready -> unloaded
    error: str | None = None
    loaded: Model | None = None
    scheduler: Scheduler | None = None
    load_started: float = 0.0
    load_seconds: float | None = None
    last_used: float = field(default_factory=time.monotonic)
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def memory_bytes(self) -> int:
        """What the loaded model holds, as it reports it; else its weight files' size (a lower bound)."""
        if not self.loaded:
            return 0
        return self.loaded.memory_bytes or sum(p.stat().st_size for p in self.source.weights_files())

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.source.model_id, "state": self.state, "source": str(self.source.path)}
        if self.error:
            out["error"] = self.error
        if self.load_seconds is not None:
            out["load_seconds"] = round(self.load_seconds, 3)
        if self.loaded:
            out.update(self.loaded.describe(), memory_bytes=self.memory_bytes)
        return out


class ModelRegistry:
    """Owns the entries; loads, unloads and hands out ready models."""

    def __init__(
        self,
        sources: list[ModelSource],
        model_config: ModelConfig,
        backend_config: BackendConfig,
        batching_config: BatchingConfig,
        cache_config: CacheConfig,
        decoding_config: DecodingConfig,
        hooks: Hooks | None = None,
    ) -> None:
        self._configs = (model_config, backend_config, batching_config, cache_config)
        self._decoding = decoding_config
        self._hooks = hooks or Hooks()
        self.entries: dict[str, ModelEntry] = {s.model_id: ModelEntry(s) for s in sources}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, model_id: str) -> ModelEntry:
        entry = self.entries.get(model_id)
        if entry is None:
            known = ", ".join(self.entries) or "none"
            raise UnknownModelError(f"model {model_id!r} is not served here; served models: {known}")
        return entry

    def load(self, model_id: str) -> ModelEntry:
        """Start loading a model unless it is loading or ready; returns at once."""
        entry = self.get(model_id)
        if entry.state in {"unloaded", "failed"}:
            entry.state, entry.error, entry.load_started = "loading", None, time.monotonic()
            entry.settled.clear()
            task = asyncio.get_running_loop().create_task(self._load(entry))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return entry

    async def _load(self, entry: ModelEntry) -> None:
        model_config, backend_config, _, cache_config = self._configs
        try:
            loaded = await asyncio.to_thread(
                load_model, entry.source, model_config, backend_config, self._decoding
            )
        except Exception as exc:  # a model that fails to load is reported, and the server stays up
            entry.state, entry.error = "failed", f"{exc.__class__.__name__}: {exc}"
            entry.settled.set()
            return
        if cache_config.token_cache_entries:
            loaded.info.token_cache = LRUCache(cache_config.token_cache_entries)
        entry.loaded = loaded
        entry.scheduler = SCHEDULERS[type(loaded)](loaded, self._configs[2], self._decoding, self._hooks)
        entry.scheduler.start()
        entry.state, entry.load_seconds, entry.last_used = "ready", time.monotonic() - entry.load_started, time.monotonic()
        entry.settled.set()
        await self._enforce_budget(keep=entry)

    async def unload(self, model_id: str) -> ModelEntry:
        """Finish the model's queued work, then free it; it reloads on the next request or /load."""
        entry = self.get(model_id)
        if entry.state == "loading":
            await entry.settled.wait()
        if entry.scheduler:
            scheduler, entry.scheduler = entry.scheduler, None
            await scheduler.drain()
        if entry.loaded:
            entry.loaded.close()
        entry.loaded, entry.state = None, "unloaded"
        return entry

    async def _enforce_budget(self, keep: ModelEntry) -> None:
        budget = self._configs[0].max_memory_mb * 1024 * 1024
        if not budget:
            return
        ready = sorted((e for e in self.entries.values() if e.state == "ready" and e is not keep), key=lambda e: e.last_used)
        used = sum(e.memory_bytes for e in self.entries.values() if e.state == "ready")
        for victim in ready:
            if used <= budget:
                break
            used -= victim.memory_bytes
            await self.unload(victim.source.model_id)

    async def ready(self, model_id: str, wait: bool) -> ModelEntry:
        """The model once ready: 503 while it loads (unless `wait`), after it failed, or when unloaded (it starts loading)."""
        entry = self.load(model_id) if self.get(model_id).state == "unloaded" else self.get(model_id)
        if entry.state == "loading" and wait:
            await entry.settled.wait()
        if entry.state == "loading":
            expected = entry.load_seconds or DEFAULT_LOAD_ESTIMATE
            remaining = max(1.0, expected - (time.monotonic() - entry.load_started))
            raise ModelNotReadyError(f"Model {model_id} is currently loading", estimated_time=round(remaining, 1))
        if entry.state != "ready":
            raise ModelNotReadyError(f"Model {model_id} failed to load: {entry.error}")
        entry.last_used = time.monotonic()
        return entry

    async def close(self) -> None:
        for task in list(self._tasks):
            await asyncio.gather(task, return_exceptions=True)
        for model_id, entry in self.entries.items():
            if entry.state == "ready":
                await self.unload(model_id)


def _batcher(model: LoadedModel, batching: BatchingConfig, decoding: DecodingConfig, hooks: Hooks) -> Batcher:
    """Encoders: dynamic batches of sequences, one forward each."""
    head, backend = model.task.head, model.backend

    def run_batch(batch: Any) -> list[Any]:
        return split_outputs(head, backend.forward(batch), batch.lengths)

    pad_id = model.info.tokenizer.pad_token_id or 0
    workers = backend.capabilities().instances
    return Batcher(run_batch, pad_id, batching, hooks.bind("on_batch", model.model_id), workers=workers)


def _decode_loop(model: GenerativeModel, batching: BatchingConfig, decoding: DecodingConfig, hooks: Hooks) -> DecodeLoop:
    """Causal LMs: continuous batching over the KV-cached decoder."""
    return DecodeLoop(
        model.decoder,
        model.info.tokenizer,
        decoding,
        on_step=hooks.bind("on_step", model.model_id),
        on_finish=hooks.bind("on_finish", model.model_id),
    )


def _seq2seq(model: Seq2SeqModel, batching: BatchingConfig, decoding: DecodingConfig, hooks: Hooks) -> Seq2SeqScheduler:
    """Encoder-decoders: one request at a time, its inputs in one `generate` batch."""
    return Seq2SeqScheduler(batching.max_queue)


# Which scheduler runs which kind of loaded model.
SCHEDULERS: dict[type, Callable[..., Scheduler]] = {
    LoadedModel: _batcher,
    GenerativeModel: _decode_loop,
    Seq2SeqModel: _seq2seq,
}
