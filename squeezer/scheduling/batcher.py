"""Dynamic batching for encoder models: concurrent requests' sequences share one forward pass.

Requests put typed work items (a feature, its arrival time, its future) on a bounded per-model queue. A
worker thread (one per backend instance, see `Capabilities.instances`) takes what is waiting, groups it by
length so similar lengths share a batch (less padding), cuts it to the token budget and batch size, and runs
it, so the event loop keeps accepting and tokenizing while the model computes. When the model is idle a request runs at once; only right
after a batch of several requests does a batch wait (at most `max_wait_ms`) for company.

The worker forms its next batch itself, the moment the previous one returns, rather than handing control
back to the event loop first: under load the loop is busy parsing and answering HTTP requests, and every
millisecond the model waits for it to schedule the next batch is throughput lost on a small machine.
Results travel back to the loop with `call_soon_threadsafe`; the futures are only ever touched there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from squeezer.backends import Batch
from squeezer.config import BatchingConfig
from squeezer.errors import UNLOADING, ModelNotReadyError, QueueFullError, worker_stopped
from squeezer.tasks.base import Feature

log = logging.getLogger(__name__)

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
    """Groups one model's work items into batches and runs them on its worker threads, one batch per worker."""

    def __init__(
        self,
        run: RunBatch,
        pad_id: int,
        config: BatchingConfig,
        on_batch: Callable[[BatchStats], None] | None = None,
        workers: int = 1,
    ) -> None:
        self._run = run
        self._n_workers = workers
        self._pad_id = pad_id
        self._config = config
        self._on_batch = on_batch
        self._pending: list[WorkItem] = []  # shared with the worker: guarded by _ready
        self._ready = threading.Condition()
        self._workers: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_batch_end = 0.0
        self._last_batch_size = 0
        self._stopping = False
        self._closing = False
        self._in_flight = 0  # batches taken but not yet delivered: guarded by _ready
        self._batches = 0
        self._alive = 0  # worker threads running: guarded by _ready
        self._dead: ModelNotReadyError | None = None  # set when the last worker thread is gone for good

    @property
    def depth(self) -> int:
        """Sequences waiting for the model."""
        return len(self._pending)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._alive = self._n_workers
        for i in range(self._n_workers):
            worker = threading.Thread(target=self._work, name=f"squeezer-forward-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)

    async def close(self) -> None:
        with self._ready:
            self._stopping = True
            dropped, self._pending = self._pending, []
            self._ready.notify_all()
        for item in dropped:
            item.future.cancel()
        for worker in self._workers:
            await asyncio.to_thread(worker.join)

    async def submit(self, features: Sequence[Feature]) -> Submitted:
        """Queue one request's sequences and wait for their outputs, in order.

        Raises QueueFullError (429) at once rather than queueing past the bound; a cancelled caller
        (client gone, timeout) cancels its items, which the worker then skips.
        """
        if self._closing:
            raise ModelNotReadyError(UNLOADING)
        if len(self._pending) + len(features) > self._config.max_queue:
            raise QueueFullError(f"too many requests waiting for this model ({self._config.max_queue} sequences); retry later")
        loop = asyncio.get_running_loop()
        items = [WorkItem(f, loop.create_future()) for f in features]
        with self._ready:
            if self._dead is not None:  # under the lock: nothing is queued where no worker will ever take it
                raise self._dead
            self._pending.extend(items)
            self._ready.notify()
        try:  # one sequence (the usual request) needs no gathering future
            done = [await items[0].future] if len(items) == 1 else await asyncio.gather(*(item.future for item in items))
        except asyncio.CancelledError:
            for item in items:
                item.future.cancel()
            raise
        batch_times = {r.batch_number: r.inference_seconds for r in done}  # rows of one batch share a time
        return Submitted([r.outputs for r in done], max(r.queue_seconds for r in done), sum(batch_times.values()))

    async def drain(self) -> None:
        """Refuse new work, finish what is queued or running, then stop (for unload and shutdown)."""
        self._closing = True
        while self._pending or self._in_flight:
            await asyncio.sleep(0.01)
        await self.close()

    def _work(self) -> None:
        """The worker thread; if it is ended all the same (an exception injected from outside, a library's
        SystemExit), what it held is answered, and once no worker is left so is everything queued, and the
        batcher refuses work with a 503 that says why rather than queue it for nobody."""
        try:
            self._serve()
        except BaseException as exc:
            log.critical("a forward worker thread stopped: %r", exc)
            error = worker_stopped(exc)
            with self._ready:
                self._alive -= 1
                if self._alive > 0:
                    return
                self._dead = error
            self._fail_pending(error)

    def _serve(self) -> None:
        """Take a batch, run it, hand the results to the event loop, repeat. Nothing a request brings may end
        this loop: its requests would wait forever, and drain with them."""
        while True:
            try:
                taken = self._next_batch()
            except Exception as exc:  # a bug in cutting batches: answer what waits rather than spin or die
                log.exception("taking a batch failed")
                self._fail_pending(exc)
                continue
            if taken is None:
                return
            self._execute(*taken)

    def _fail_pending(self, exc: Exception) -> None:
        """Answer everything queued with `exc` (on the event loop)."""
        with self._ready:
            failed, self._pending = self._pending, []
        if failed and self._loop is not None:
            stats = BatchStats(len(failed), 0, 0, 0.0)
            self._loop.call_soon_threadsafe(self._deliver, failed, exc, time.perf_counter(), stats, 0, False)

    def _next_batch(self) -> tuple[list[WorkItem], int, bool] | None:
        """Block until there is live work (None once closing), give it the wait window, then cut a batch, number
        it, and say whether it is alone: no other batch running or waiting (a backend may run it on every core)."""
        with self._ready:
            while True:
                self._pending = [it for it in self._pending if not it.future.done()]  # cancelled: skipped
                if self._stopping:
                    return None
                if self._pending:
                    break
                self._ready.wait()
            batch = take_batch(self._pending, self._config)
            if len(batch) == len(self._pending) < self._config.max_batch_size and self._busy():
                # The batch would take everything waiting: give it the window to grow while the model is
                # hot. A batch already bounded by the budget or by padding gains nothing from waiting.
                self._ready.wait(self._config.max_wait_ms / 1000)
                self._pending = [it for it in self._pending if not it.future.done()]
                if self._stopping or not self._pending:
                    return None if self._stopping else ([], 0, False)
                batch = take_batch(self._pending, self._config)
            chosen = {id(it) for it in batch}
            self._pending = [it for it in self._pending if id(it) not in chosen]
            alone = not self._in_flight and not self._pending
            self._in_flight += 1
            self._batches += 1
            return batch, self._batches, alone

    def _busy(self) -> bool:
        """The model has just finished a batch of several requests, so more are likely on their way. After a
        batch of one, a closed-loop client sends its next request only once it has its answer: waiting for
        company would only add the window to every answer (measured, MiniLM on PyTorch, one client, `squeezer
        bench`: median 19.6 -> 16.1 ms, 49.4 -> 59.7 requests/s; the out-of-the-box app's 15.1 ms)."""
        return self._last_batch_size > 1 and time.perf_counter() - self._last_batch_end < self._config.max_wait_ms / 1000

    def _execute(self, batch: list[WorkItem], number: int, alone: bool) -> None:
        if not batch:
            return
        start = time.perf_counter()
        stats = BatchStats(len(batch), 0, 0, 0.0)
        try:  # padding included: a feature it cannot pad fails its batch, never the thread
            types = [it.feature.token_type_ids or [0] * it.length for it in batch]
            has_types = any(it.feature.token_type_ids is not None for it in batch)
            padded = Batch.pad([it.feature.input_ids for it in batch], types if has_types else None, self._pad_id, alone)
            stats = BatchStats(len(batch), padded.input_ids.size, sum(padded.lengths), 0.0)
            rows: list[Outputs] | Exception = self._run(padded)
        except Exception as exc:  # a backend failure answers every request in the batch, never hangs them
            rows = exc
        except BaseException as exc:  # the thread is being ended: answer its batch before it goes
            stopped = worker_stopped(exc)
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._deliver, batch, stopped, start, stats, number)
            raise
        self._last_batch_end, self._last_batch_size = time.perf_counter(), len(batch)
        stats = dataclasses.replace(stats, seconds=self._last_batch_end - start)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._deliver, batch, rows, start, stats, number)

    def _deliver(self, batch: list[WorkItem], rows: list[Outputs] | Exception, start: float, stats: BatchStats, number: int,
                 taken: bool = True) -> None:
        """On the event loop: resolve each item's future (a cancelled one is left alone); `taken`: the batch
        counted as in flight."""
        if taken:
            with self._ready:
                self._in_flight -= 1
        for i, item in enumerate(batch):
            if item.future.done():
                continue
            if isinstance(rows, Exception):
                item.future.set_exception(rows)
            else:
                item.future.set_result(ItemResult(rows[i], start - item.arrived, stats.seconds, number))
        if self._on_batch and not isinstance(rows, Exception):
            self._on_batch(stats)
