"""Dynamic batching for encoder models: concurrent requests' sequences share one forward pass.

Requests put typed work items (a feature, its arrival time, its future) on a bounded per-model queue. One
loop takes what is waiting, sorts it by length so similar lengths share a batch (less padding), cuts it to
the token budget and batch size, and runs it on a single worker thread, so the event loop keeps accepting
and tokenizing while the model computes. When the model is idle a request runs at once; only while it is
busy does a batch wait (at most `max_wait_ms`) for company.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from squeezer.backends import Batch
from squeezer.config import BatchingConfig
from squeezer.errors import ModelNotReadyError, QueueFullError
from squeezer.tasks.base import Feature

Outputs = dict[str, np.ndarray]
# Runs one padded batch and returns each row's outputs, padding removed.
RunBatch = Callable[[Batch], list[Outputs]]


@dataclass(frozen=True)
class ItemResult:
    """One sequence's outputs, with how long it queued and how long its batch ran."""

    outputs: Outputs
    queue_seconds: float
    inference_seconds: float
    batch_number: int


@dataclass(frozen=True)
class Submitted:
    """One request's outputs in feature order, with its slowest queue wait and its batches' run time."""

    outputs: list[Outputs]
    queue_seconds: float
    inference_seconds: float


@dataclass
class WorkItem:
    """One sequence waiting for the model; its future is created before it is queued."""

    feature: Feature
    future: asyncio.Future[ItemResult]
    arrived: float = field(default_factory=time.perf_counter)

    @property
    def length(self) -> int:
        return len(self.feature)


@dataclass(frozen=True)
class BatchStats:
    """What one forward pass did, for metrics and response timing headers."""

    size: int
    padded_tokens: int
    real_tokens: int
    seconds: float


def take_batch(pending: list[WorkItem], config: BatchingConfig) -> list[WorkItem]:
    """Choose the next batch: the oldest item, grown through its neighbours in length order.

    Anchoring on the oldest item means nothing starves. Growing only while the padded size (sequences x
    longest length) stays within the token budget and within `max_padding_ratio` of the real token count
    keeps padding, which is pure waste on a CPU, low: waiting items of other lengths form the next batches,
    a few milliseconds later, exactly like a length-sorted offline run.
    """
    ordered = sorted(pending, key=lambda it: it.length)
    lo = hi = next(i for i, it in enumerate(ordered) if it is pending[0])
    real = ordered[lo].length
    while hi - lo + 1 < config.max_batch_size:
        options = [i for i in (lo - 1, hi + 1) if 0 <= i < len(ordered)]
        best = None
        for i in options:
            width = ordered[max(hi, i)].length
            padded, total = width * (hi - lo + 2), real + ordered[i].length
            if padded <= config.max_batch_tokens and padded <= config.max_padding_ratio * total:
                if best is None or padded / total < best[1]:
                    best = (i, padded / total)
        if best is None:
            break
        lo, hi = min(lo, best[0]), max(hi, best[0])
        real += ordered[best[0]].length
    return ordered[lo : hi + 1]


class Batcher:
    """Groups one model's work items into batches and runs them, one batch at a time."""

    def __init__(self, run: RunBatch, pad_id: int, config: BatchingConfig, on_batch: Callable[[BatchStats], None] | None = None) -> None:
        self._run = run
        self._pad_id = pad_id
        self._config = config
        self._on_batch = on_batch
        self._pending: list[WorkItem] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="squeezer-forward")
        self._last_batch_end = 0.0
        self._loop_task: asyncio.Task[None] | None = None
        self._closing = False
        self._running = False
        self._batches = 0

    @property
    def depth(self) -> int:
        """Sequences waiting for the model."""
        return len(self._pending)

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name="squeezer-batcher")

    async def close(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for item in self._pending:
            item.future.cancel()
        self._executor.shutdown(wait=True)

    async def submit(self, features: Sequence[Feature]) -> Submitted:
        """Queue one request's sequences and wait for their outputs, in order.

        Raises QueueFullError (429) at once rather than queueing past the bound; a cancelled caller
        (client gone, timeout) cancels its items, which the loop then skips.
        """
        if self._closing:
            raise ModelNotReadyError("this model is being unloaded; retry to load it again")
        if len(self._pending) + len(features) > self._config.max_queue:
            raise QueueFullError(f"too many requests waiting for this model ({self._config.max_queue} sequences); retry later")
        loop = asyncio.get_running_loop()
        items = [WorkItem(f, loop.create_future()) for f in features]
        self._pending.extend(items)
        self._wake.set()
        try:
            done = await asyncio.gather(*(item.future for item in items))
        except asyncio.CancelledError:
            for item in items:
                item.future.cancel()
            raise
        batch_times = {r.batch_number: r.inference_seconds for r in done}  # rows of one batch share a time
        return Submitted([r.outputs for r in done], max(r.queue_seconds for r in done), sum(batch_times.values()))

    async def drain(self) -> None:
        """Refuse new work, finish what is queued or running, then stop (for unload and shutdown)."""
        self._closing = True
        while self._pending or self._running:
            await asyncio.sleep(0.01)
        await self.close()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._pending = [it for it in self._pending if not it.future.done()]
            if not self._pending:
                self._wake.clear()
                continue
            await self._maybe_wait()
            self._pending = [it for it in self._pending if not it.future.done()]
            if not self._pending:
                continue
            batch = take_batch(self._pending, self._config)
            chosen = {id(it) for it in batch}
            self._pending = [it for it in self._pending if id(it) not in chosen]
            await self._execute(loop, batch)

    async def _maybe_wait(self) -> None:
        """While the model is busy (a batch just ended), give a small batch a moment to grow."""
        busy = time.perf_counter() - self._last_batch_end < self._config.max_wait_ms / 1000
        if busy and len(self._pending) < self._config.max_batch_size:
            await asyncio.sleep(self._config.max_wait_ms / 1000)

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[WorkItem]) -> None:
        types = [it.feature.token_type_ids or [0] * it.length for it in batch]
        has_types = any(it.feature.token_type_ids is not None for it in batch)
        padded = Batch.pad([it.feature.input_ids for it in batch], types if has_types else None, self._pad_id)
        start = time.perf_counter()
        self._running = True
        try:
            rows = await loop.run_in_executor(self._executor, self._run, padded)
        except Exception as exc:  # a backend failure answers every request in the batch, never hangs them
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        finally:
            self._last_batch_end = time.perf_counter()
            self._running = False
        took = self._last_batch_end - start
        self._batches += 1
        for item, row in zip(batch, rows):
            if not item.future.done():
                item.future.set_result(ItemResult(row, start - item.arrived, took, self._batches))
        if self._on_batch:
            self._on_batch(BatchStats(len(batch), padded.input_ids.size, sum(padded.lengths), took))
