"""Encoder-decoder requests, one at a time on a single worker thread (a request's inputs share one batch).

The queue is bounded in inputs (`BatchingConfig.max_queue`): past it a request gets 429 at once. A caller
that goes away before its turn takes its request off the queue; one already generating keeps its inputs
counted until the work really stops (a `generate` told to stop ends after its current step).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from squeezer.errors import UNLOADING, ClientError, ModelNotReadyError, QueueFullError

T = TypeVar("T")


class _Slot:
    """Whether a queued job started on the worker or was abandoned first; exactly one of the two wins."""

    def __init__(self, queued: float) -> None:
        self.queued, self.started = queued, queued
        self._lock = threading.Lock()
        self._state = "queued"

    def begin(self) -> bool:
        with self._lock:
            if self._state == "queued":
                self._state, self.started = "running", time.perf_counter()
            return self._state == "running"

    def abandon(self) -> bool:
        """True when this call abandoned a job that had not started (so it never will)."""
        with self._lock:
            if self._state != "queued":
                return False
            self._state = "abandoned"
            return True


@dataclass(frozen=True)
class Ran:
    """What a job returned, how long it waited for the worker and how long it ran."""

    value: object
    queue_seconds: float
    inference_seconds: float


class Seq2SeqScheduler:
    """Runs submitted jobs in arrival order on one thread, so the event loop stays free."""

    def __init__(self, max_queue: int, max_wait: float = 0.0) -> None:
        """`max_wait`: seconds a job may wait for the worker before it is answered 504, unrun (0: no limit)."""
        self._max_queue, self._max_wait = max_queue, max_wait
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="squeezer-seq2seq")
        self._waiting = 0  # inputs queued or running
        self._closing = False

    @property
    def depth(self) -> int:
        """Inputs waiting for (or in) the model."""
        return self._waiting

    async def submit(self, job: Callable[[], T], size: int = 1) -> Ran:
        """Run `job` on the worker thread once the jobs before it are done."""
        return await self.start_job(job, size)

    def start_job(self, job: Callable[[], T], size: int = 1) -> asyncio.Future[Ran]:
        """Queue `job` and return its future at once (a stream starts reading before the job ends); a full
        queue or an unloading model raises here, before anything is queued. Cancelling the future takes a
        job that has not started off the queue."""
        if self._closing:
            raise ModelNotReadyError(UNLOADING)
        if self._waiting + size > self._max_queue:
            raise QueueFullError(f"too many requests waiting for this model ({self._max_queue} inputs); retry later")
        loop = asyncio.get_running_loop()
        slot = _Slot(time.perf_counter())

        def timed() -> T:
            if not slot.begin():  # cancelled before its turn: it never runs
                raise asyncio.CancelledError
            try:
                if self._max_wait and slot.started - slot.queued > self._max_wait:
                    raise ClientError(f"waited more than {self._max_wait:g}s for the model (--request-timeout)", status=504)
                return job()
            finally:  # the slot is free when the work really stops, not when its caller stopped waiting
                with contextlib.suppress(RuntimeError):  # the event loop is gone (shut down): nothing to free
                    loop.call_soon_threadsafe(self._release, size)

        async def run() -> Ran:
            value = await loop.run_in_executor(self._executor, timed)
            return Ran(value, slot.started - slot.queued, time.perf_counter() - slot.started)

        def ended(_: asyncio.Future[Ran]) -> None:
            if slot.abandon():  # cancelled before it started, and now it never will: free its slot here
                self._release(size)

        self._waiting += size
        task = asyncio.ensure_future(run())
        task.add_done_callback(ended)
        return task

    def _release(self, size: int) -> None:
        self._waiting -= size

    async def drain(self) -> None:
        """Refuse new work, finish what is queued or running, then stop."""
        self._closing = True
        while self._waiting:
            await asyncio.sleep(0.01)
        await self.close()

    async def close(self) -> None:
        self._closing = True
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
