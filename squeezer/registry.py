"""The served models and their lifecycle: loading in the background, ready, failed, unloaded.

Loading never blocks the event loop (it runs in a thread); a request for a model that is loading gets the
Inference API's 503 with an estimated time, or waits for it when asked to; a request for an unloaded model
starts loading it again. A memory budget unloads the least recently used models when a load passes it; a
model that would pass it alone fails to load instead (the budget is the operator's promise to the machine).
Each entry knows its task (so what it can do) from its configuration, loaded or not. With
`optimize_in_background`, a model serves at once and its compiled artifact is swapped in when ready (`swap`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from squeezer import heap
from squeezer.artifact import read_report
from squeezer.background import BackgroundOptimizer
from squeezer.config import ServeConfig
from squeezer.detect import configured_task
from squeezer.errors import ModelNotReadyError, UnknownModelError, error_text
from squeezer.runtime import Hooks, Prepare, Runtime, capabilities_for, load_runtime
from squeezer.sources import ModelSource

DEFAULT_LOAD_ESTIMATE = 20.0  # seconds, until a model has loaded once and we know better


class OverBudgetError(Exception):
    """A model that holds more memory loaded than --max-memory-mb allows with nothing else loaded."""


def held_bytes(runtime: Runtime, source: ModelSource) -> int:
    """What a loaded model holds, as its runtime reports it; else its weight files' size (a lower bound)."""
    return runtime.memory_bytes or sum(p.stat().st_size for p in source.weights_files())


def verdict(artifact: ModelSource) -> dict[str, Any]:
    """Why the artifact serves, from its report: the candidate the gate and the clock chose, its speed-up over the
    reference and its accuracy figures (for /info and the log)."""
    report = read_report(artifact.path)
    chosen = next((c for c in report.get("candidates", []) if c.get("name") == report.get("chosen")), {})
    return {"chosen": report.get("chosen"), "speedup": chosen.get("speedup"), "metrics": chosen.get("metrics", {})}


@dataclass
class ModelEntry:
    """One served model and where it is in its life."""

    source: ModelSource
    task: str | None  # as configured, then as loaded (None: its files do not say; loading it fails and says why)
    state: str = "unloaded"  # unloaded -> loading -> ready | failed; ready -> unloading -> unloaded
    error: str | None = None
    runtime: Runtime | None = None
    load_started: float = 0.0
    load_seconds: float | None = None
    last_used: float = field(default_factory=time.monotonic)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    ever_settled: bool = False  # loaded or failed at least once (the server's startup is over for it)
    lifecycle: asyncio.Lock = field(default_factory=asyncio.Lock)  # one unload, eviction or swap at a time
    served: ModelSource | None = None  # the artifact swapped in for `source`: what later loads load
    optimization: dict[str, Any] | None = None  # background optimization: its state and verdict (see background)
    swaps: int = 0  # runtimes swapped in: part of the result cache's key, so no answer outlives its backend

    @property
    def capabilities(self) -> frozenset[str]:
        return capabilities_for(self.task)

    @property
    def memory_bytes(self) -> int:
        """What the loaded model holds (`held_bytes`); 0 when it is not loaded."""
        return held_bytes(self.runtime, self.source) if self.runtime else 0

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.source.model_id, "state": self.state, "source": str(self.source.path)}
        if self.error:
            out["error"] = self.error
        if self.load_seconds is not None:
            out["load_seconds"] = round(self.load_seconds, 3)
        if self.runtime:
            out.update(self.runtime.describe(), memory_bytes=self.memory_bytes)
        if self.optimization:
            out["optimization"] = self.optimization
        return out


class ModelRegistry:
    """Owns the entries; loads, unloads and hands out ready runtimes."""

    def __init__(self, sources: Sequence[ModelSource], config: ServeConfig, hooks: Hooks | None = None,
                 prepare: Prepare | None = None) -> None:
        background = config.model.optimize_in_background and not config.model.optimize and prepare is not None
        self._config, self._hooks = config, hooks or Hooks()
        self._prepare = None if background else prepare  # run before a load (--optimize), or ...
        self._optimizer = (BackgroundOptimizer(prepare, self.swap, self._hidden, self.reserve, self.release)  # ... or
                           if background else None)  # while serving
        self._reserved = 0  # bytes of the memory budget held for work beside the loaded models (a compile)
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
            source = entry.served or entry.source
            runtime = await asyncio.to_thread(load_runtime, source, self._config, self._hooks, self._prepare)
            try:
                self._check_fits(held_bytes(runtime, entry.source))
                runtime.start()
            except BaseException:
                runtime.close()
                raise
        except Exception as exc:  # a model that fails to load (or to start) is reported, and the server stays up
            entry.state, entry.error = "failed", error_text(exc, self._hidden(entry))
            entry.ever_settled = True
            entry.settled.set()
            return
        entry.runtime, entry.task = runtime, runtime.task  # the task as loaded: its files may have been repaired
        entry.state, entry.load_seconds, entry.last_used = "ready", time.monotonic() - entry.load_started, time.monotonic()
        entry.ever_settled = True
        entry.settled.set()
        heap.freeze()
        await self._enforce_budget(keep=entry)
        if self._optimizer is not None and entry.optimization is None and not entry.source.artifact:
            self._optimizer.begin(entry)

    def _check_fits(self, held: int) -> None:
        """Refuse a model that passes the memory budget alone: evicting every other model would not bring it
        back under, and serving it anyway would break the budget the operator set for the machine."""
        budget_mb = self._config.model.max_memory_mb
        if budget_mb and held > budget_mb << 20:
            raise OverBudgetError(f"the model holds {held / 2**20:.1f} MiB loaded, more than --max-memory-mb "
                                  f"{budget_mb} allows with no other model loaded; raise --max-memory-mb to serve it")

    def _hidden(self, entry: ModelEntry) -> str | None:
        """The folder to cut from errors shown to clients: the server's file layout stays private (see /info)."""
        return None if self._config.server.show_paths else str(entry.source.path.parent)

    async def swap(self, entry: ModelEntry, artifact: ModelSource) -> dict[str, Any]:
        """Serve `artifact` in place of what the model runs now, without failing or reordering a request: new
        requests go to the new runtime from the moment it is in place; work the old one accepted finishes there,
        then it is freed. Memory for both is made first (evicting other models), or the swap waits for the next
        load. Returns the record for /info."""
        async with entry.lifecycle:
            entry.served = artifact
            if entry.state != "ready" or entry.runtime is None:
                return {"state": "serving", "note": "the artifact serves from the next load"}
            needed = sum(p.stat().st_size for p in artifact.path.iterdir() if p.is_file())
            if not await self._make_room(needed, keep=entry):
                return {"state": "kept", "reason": "--max-memory-mb cannot hold both backends during the swap; "
                                                   "the artifact serves from the next load"}
            try:
                new = await asyncio.to_thread(load_runtime, artifact, self._config, self._hooks, None)
                new.start()
            except Exception as exc:
                entry.served = None
                return {"state": "failed", "reason": error_text(exc, self._hidden(entry))}
            old, entry.runtime = entry.runtime, new
            entry.swaps += 1
            await self._retire(old)
            del old
            heap.settle()
        return {"state": "serving", "backend": new.describe().get("backend"), **verdict(artifact)}

    async def unload(self, model_id: str) -> ModelEntry:
        """Finish the model's queued work, then free it; it reloads on the next request or /load."""
        entry = self.get(model_id)
        if await self._unload(entry):
            heap.settle()
        return entry

    async def _unload(self, entry: ModelEntry) -> bool:
        """Unload `entry`; whether a runtime was freed (what it held in cycles is then the collector's to free)."""
        freed = False
        async with entry.lifecycle:  # a second unload (or an eviction) waits for this one, never closes twice
            if entry.state == "loading":
                await entry.settled.wait()
            if entry.runtime:
                runtime, entry.runtime = entry.runtime, None
                entry.state = "unloading"  # requests now get 503 and start no new load until it is freed
                await self._retire(runtime)
                freed = True
            if entry.state != "failed":  # a failed model keeps its reason: nothing was loaded to unload
                entry.state = "unloaded"
        return freed

    @staticmethod
    async def _retire(runtime: Runtime) -> None:
        """Finish the work `runtime` accepted, then free it."""
        try:
            await runtime.drain()
        finally:
            runtime.close()

    async def reserve(self, entry: ModelEntry, needed: int) -> bool:
        """Hold `needed` bytes of the budget for work beside the loaded models (a background compile of
        `entry`), evicting the least recently used others; whether they fit. Loads meanwhile count them."""
        budget = self._config.model.max_memory_mb * 1024 * 1024
        if budget and entry.memory_bytes + self._reserved + needed > budget:
            return False  # it cannot fit even with every other model unloaded: unload none for nothing
        if not await self._make_room(needed, keep=entry):
            return False
        self._reserved += needed
        return True

    def release(self, held: int) -> None:
        """Give back bytes `reserve` held."""
        self._reserved -= held

    async def _enforce_budget(self, keep: ModelEntry) -> None:
        await self._make_room(0, keep)

    async def _make_room(self, needed: int, keep: ModelEntry) -> bool:
        """Unload the least recently used models but `keep` until `needed` more bytes fit the budget; whether
        they do."""
        budget = self._config.model.max_memory_mb * 1024 * 1024
        if not budget:
            return True
        ready = sorted((e for e in self.entries.values() if e.state == "ready" and e is not keep), key=lambda e: e.last_used)
        used = sum(e.memory_bytes for e in self.entries.values() if e.state == "ready") + self._reserved + needed
        for victim in ready:
            if used <= budget:
                break
            used -= victim.memory_bytes
            await self.unload(victim.source.model_id)
        return used <= budget

    async def ready(self, model_id: str, wait: bool) -> Runtime:
        """The model's runtime once ready: 503 while it loads or is being unloaded (unless `wait`: then it waits for
        the unload to end and the reload it starts), after it failed, or when unloaded (it starts loading)."""
        entry = self.get(model_id)
        if entry.state == "unloading" and wait:  # an eviction under a memory budget: wait it out, then reload
            async with entry.lifecycle:  # the unload holds it until the runtime is freed
                pass
        if entry.state == "unloaded":
            entry = self.load(model_id)
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
        if self._optimizer is not None:
            self._optimizer.close()
        for task in list(self._tasks):
            await asyncio.gather(task, return_exceptions=True)
        for entry in self.entries.values():
            if entry.state == "ready":
                await self._unload(entry)
        heap.release()  # once for all of them, not a settle per model
