"""Optimizing while serving: a model answers at once on what it loaded from, while the compiler's step builds
its artifact; once the artifact has passed the gate, the registry swaps it in (see `ModelRegistry.swap`).

The compile runs on a daemon thread of its own: it takes minutes, and neither a shutdown nor an unload should
wait for it (an interrupted compile leaves only a staging folder, which the next optimize run removes). Each
model's progress is on /info under `optimization`: compiling, then serving (the artifact serves), kept (the
compiler had nothing faster, or memory would not hold the compile or both backends during the swap) or
failed, with the reason.

Under `--max-memory-mb` the compile's own memory counts too: it is held in the budget (evicting the least
recently used other models, like a load) before the compile starts, and given back when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from squeezer.errors import error_text
from squeezer.runtime import Prepare
from squeezer.sources import ModelSource

log = logging.getLogger(__name__)
T = TypeVar("T")
Swap = Callable[[Any, ModelSource], Awaitable[dict[str, Any]]]  # (entry, artifact) -> its `optimization` record
Reserve = Callable[[Any, int], Awaitable[bool]]  # (entry, bytes) -> whether the memory budget holds them now
Release = Callable[[int], None]  # bytes a finished compile gives back to the budget
# What a compile holds beside the served model: its process's libraries, and in multiples of the model's memory
# the larger of two phases, every candidate built first (ONNX Runtime's fusions, in Python, at some 7 times the
# weights) and then each loaded, gated and the finalists timed beside the reference. Measured as the peak resident
# memory of `squeezer optimize` with the default sweep and every candidate passing (BERT encoders of 87, 127 and
# 418 MiB of weights: 1.22, 1.48 and 3.44 GiB, BENCHMARKS.md; it grows by 6.9 MiB per MiB of weights); this holds
# each with 12 to 18% to spare. A causal LM's is less in proportion: SmolLM2-135M (0.5 GiB of float weights, more
# with its KV cache) peaked at 3.31 GiB.
COMPILE_MEMORY_BASE = 800 << 20
COMPILE_MEMORY_FACTOR = 7.5


def compile_memory(model_bytes: int) -> int:
    """The bytes a background compile of a model of `model_bytes` is held in the memory budget for."""
    return COMPILE_MEMORY_BASE + int(COMPILE_MEMORY_FACTOR * model_bytes)


def in_daemon_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """`fn(*args)` on a new daemon thread, as a future of this event loop (the process never waits for it)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if not future.done():
            future.set_exception(exc) if exc is not None else future.set_result(result)

    def run() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:  # handed to the awaiting task, which reports it
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the event loop is gone (shut down): nobody waits for the result
            pass

    threading.Thread(target=run, name="squeezer-optimize", daemon=True).start()
    return future


class BackgroundOptimizer:
    """Compiles served models one after another (a compile already uses every core) and hands each artifact to
    `swap`; records how it went on the entry."""

    def __init__(self, prepare: Prepare, swap: Swap, hidden: Callable[[Any], str | None], reserve: Reserve,
                 release: Release) -> None:
        """`hidden(entry)`: the folder to cut from a failure's text (the registry's rule for errors shown);
        `reserve` and `release`: the memory budget's hold for the compile."""
        self._prepare, self._swap, self._hidden = prepare, swap, hidden
        self._reserve, self._release = reserve, release
        self._one_at_a_time = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def begin(self, entry: Any) -> None:
        """Start optimizing a model that serves from its own files (on the event loop)."""
        entry.optimization = {"state": "compiling"}
        task = asyncio.get_running_loop().create_task(self._run(entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, entry: Any) -> None:
        started = time.monotonic()
        async with self._one_at_a_time:  # swaps too: two at once could each wait to evict the other
            held = compile_memory(entry.memory_bytes)
            if not await self._reserve(entry, held):
                entry.optimization = {"state": "kept", "reason": f"--max-memory-mb cannot hold the compile (about "
                                      f"{held >> 20} MiB beside the served models); it keeps serving as it is"}
                log.warning("%s: not optimized in the background: %s", entry.source.model_id, entry.optimization["reason"])
                return
            try:
                artifact = await in_daemon_thread(self._prepare, entry.source)
            except Exception as exc:
                entry.optimization = {"state": "failed", "reason": error_text(exc, self._hidden(entry))}
                log.warning("%s: optimizing in the background failed; it keeps serving as it is: %s",
                            entry.source.model_id, entry.optimization["reason"])
                return
            finally:
                self._release(held)
            if not artifact.artifact:
                entry.optimization = {"state": "kept", "reason": "the compiler has nothing faster for this model"}
                return
            record = await self._swap(entry, artifact)
        entry.optimization = {**record, "seconds": round(time.monotonic() - started, 1)}
        log.info("%s: %s", entry.source.model_id, entry.optimization)

    def close(self) -> None:
        """Stop waiting for compiles (their daemon threads end with the process)."""
        for task in list(self._tasks):
            task.cancel()
