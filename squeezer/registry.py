"""The served models and their lifecycle: loading in the background, ready, failed, unloaded.

Loading never blocks the event loop (it runs in a thread); a request for a model that is loading gets the
Inference API's 503 with an estimated time, or waits for it when asked to; a request for an unloaded model
starts loading it again. A memory budget unloads the least recently used models when a load passes it.
Each entry knows its task (so what it can do) from its configuration, loaded or not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from squeezer.config import ServeConfig
from squeezer.detect import configured_task
from squeezer.errors import ModelNotReadyError, UnknownModelError
from squeezer.runtime import Hooks, Prepare, Runtime, capabilities_for, load_runtime
from squeezer.sources import ModelSource

DEFAULT_LOAD_ESTIMATE = 20.0  # seconds, until a model has loaded once and we know better


@dataclass
class ModelEntry:
    """One served model and where it is in its life."""

    source: ModelSource
    task: str | None  # as configured (None: its files do not say; loading it fails and says why)
    state: str = "unloaded"  # unloaded -> loading -> ready | failed; ready -> unloading -> unloaded
    error: str | None = None
    runtime: Runtime | None = None
    load_started: float = 0.0
    load_seconds: float | None = None
    last_used: float = field(default_factory=time.monotonic)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    ever_settled: bool = False  # loaded or failed at least once (the server's startup is over for it)
    lifecycle: asyncio.Lock = field(default_factory=asyncio.Lock)  # one unload (or eviction) at a time

    @property
    def capabilities(self) -> frozenset[str]:
        return capabilities_for(self.task)

    @property
    def memory_bytes(self) -> int:
        """What the loaded model holds, as it reports it; else its weight files' size (a lower bound)."""
        if not self.runtime:
            return 0
        return self.runtime.memory_bytes or sum(p.stat().st_size for p in self.source.weights_files())

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.source.model_id, "state": self.state, "source": str(self.source.path)}
        if self.error:
            out["error"] = self.error
        if self.load_seconds is not None:
            out["load_seconds"] = round(self.load_seconds, 3)
        if self.runtime:
            out.update(self.runtime.describe(), memory_bytes=self.memory_bytes)
        return out


class ModelRegistry:
    """Owns the entries; loads, unloads and hands out ready runtimes."""

    def __init__(self, sources: Sequence[ModelSource], config: ServeConfig, hooks: Hooks | None = None,
                 prepare: Prepare | None = None) -> None:
        self._config, self._hooks, self._prepare = config, hooks or Hooks(), prepare
        self.entries: dict[str, ModelEntry] = {s.model_id: ModelEntry(s, configured_task(s, config.model.task)) for s in sources}
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
        try:
            runtime = await asyncio.to_thread(load_runtime, entry.source, self._config, self._hooks, self._prepare)
            try:
                runtime.start()
            except BaseException:
                runtime.close()
                raise
        except Exception as exc:  # a model that fails to load (or to start) is reported, and the server stays up
            error = f"{exc.__class__.__name__}: {exc}"
            if not self._config.server.show_paths:  # the server's file layout stays private (see /info)
                error = error.replace(str(entry.source.path.parent) + "/", "")
            entry.state, entry.error = "failed", error
            entry.ever_settled = True
            entry.settled.set()
            return
        entry.runtime = runtime
        entry.state, entry.load_seconds, entry.last_used = "ready", time.monotonic() - entry.load_started, time.monotonic()
        entry.ever_settled = True
        entry.settled.set()
        await self._enforce_budget(keep=entry)

    async def unload(self, model_id: str) -> ModelEntry:
        """Finish the model's queued work, then free it; it reloads on the next request or /load."""
        entry = self.get(model_id)
        async with entry.lifecycle:  # a second unload (or an eviction) waits for this one, never closes twice
            if entry.state == "loading":
                await entry.settled.wait()
            if entry.runtime:
                runtime, entry.runtime = entry.runtime, None
                entry.state = "unloading"  # requests now get 503 and start no new load until it is freed
                try:
                    await runtime.drain()
                finally:
                    runtime.close()
            entry.state = "unloaded"
        return entry

    async def _enforce_budget(self, keep: ModelEntry) -> None:
        budget = self._config.model.max_memory_mb * 1024 * 1024
        if not budget:
            return
        ready = sorted((e for e in self.entries.values() if e.state == "ready" and e is not keep), key=lambda e: e.last_used)
        used = sum(e.memory_bytes for e in self.entries.values() if e.state == "ready")
        for victim in ready:
            if used <= budget:
                break
            used -= victim.memory_bytes
            await self.unload(victim.source.model_id)

    async def ready(self, model_id: str, wait: bool) -> Runtime:
        """The model's runtime once ready: 503 while it loads (unless `wait`), after it failed, or when unloaded
        (it starts loading)."""
        entry = self.load(model_id) if self.get(model_id).state == "unloaded" else self.get(model_id)
        if entry.state == "loading" and wait:
            await entry.settled.wait()
        if entry.state == "loading":
            expected = entry.load_seconds or DEFAULT_LOAD_ESTIMATE
            remaining = max(1.0, expected - (time.monotonic() - entry.load_started))
            raise ModelNotReadyError(f"Model {model_id} is currently loading", estimated_time=round(remaining, 1))
        if entry.state == "unloading":
            raise ModelNotReadyError(f"Model {model_id} is being unloaded; retry to load it again")
        if entry.state != "ready" or entry.runtime is None:
            raise ModelNotReadyError(f"Model {model_id} failed to load: {entry.error}")
        entry.last_used = time.monotonic()
        return entry.runtime

    async def close(self) -> None:
        for task in list(self._tasks):
            await asyncio.gather(task, return_exceptions=True)
        for model_id, entry in self.entries.items():
            if entry.state == "ready":
                await self.unload(model_id)
