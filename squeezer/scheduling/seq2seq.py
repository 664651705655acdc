"""Encoder-decoder requests, one at a time on a single worker thread (a request's inputs share one batch).

The queue is bounded in inputs (`BatchingConfig.max_queue`): past it a request gets 429 at once. A caller
that goes away before its turn takes its request off the queue; one already generating runs to its end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from squeezer.errors import ModelNotReadyError, QueueFullError

T = TypeVar("T")


@dataclass(frozen=True)
class Ran:
    """What a job returned, how long it waited for the worker and how long it ran."""

    value: object
    queue_seconds: float
    inference_seconds: float


class Seq2SeqScheduler:
    """Runs submitted jobs in arrival order on one thread, so the event loop stays free."""

    def __init__(self, max_queue: int) -> None:
        self._max_queue = max_queue
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
            raise ModelNotReadyError("this model is being unloaded; retry to load it again")
        if self._waiting + size > self._max_queue:
            raise QueueFullError(f"too many requests waiting for this model ({self._max_queue} inputs); retry later")
        queued = time.perf_counter()
        started: list[float] = []

        def timed() -> T:
            started.append(time.perf_counter())
            return job()

        async def run() -> Ran:
            value = await asyncio.get_running_loop().run_in_executor(self._executor, timed)
            begin = started[0] if started else queued
            return Ran(value, begin - queued, time.perf_counter() - begin)

        self._waiting += size
        task = asyncio.ensure_future(run())
        task.add_done_callback(lambda _: self._release(size))  # runs even if cancelled before it started
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
