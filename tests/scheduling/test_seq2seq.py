"""The encoder-decoder worker's queue accounting: a slot is held exactly as long as its work runs (issue 13)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from squeezer.errors import QueueFullError
from squeezer.scheduling.seq2seq import Seq2SeqScheduler
from tests.helpers import until


async def test_a_running_job_keeps_its_inputs_counted_until_it_really_stops() -> None:
    """A caller that stops waiting (its deadline, a disconnect) does not free the worker: the queue keeps
    counting the job until `generate` returns, so new work cannot pile up behind it unseen."""
    scheduler = Seq2SeqScheduler(max_queue=2)
    started, release = threading.Event(), threading.Event()

    def long_job() -> str:
        started.set()
        release.wait(10)
        return "done"

    job = scheduler.start_job(long_job, size=2)
    assert await asyncio.to_thread(started.wait, 5)
    job.cancel()
    await asyncio.gather(job, return_exceptions=True)
    assert scheduler.depth == 2
    with pytest.raises(QueueFullError):
        scheduler.start_job(lambda: "more", size=1)
    release.set()
    await until(lambda: scheduler.depth == 0)
    assert (await scheduler.submit(lambda: 41 + 1)).value == 42
    await scheduler.drain()


async def test_a_job_cancelled_before_its_turn_never_runs_and_frees_its_slot() -> None:
    scheduler = Seq2SeqScheduler(max_queue=3)
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []
    first = scheduler.start_job(lambda: (started.set(), release.wait(10)), size=1)
    second = scheduler.start_job(lambda: ran.append("second"), size=2)
    assert await asyncio.to_thread(started.wait, 5)
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
    assert scheduler.depth == 1  # only the running job
    release.set()
    await first
    await until(lambda: scheduler.depth == 0)
    assert ran == []
    await scheduler.drain()


async def test_a_job_that_waits_past_the_timeout_is_answered_504_unrun() -> None:
    from squeezer.errors import ClientError

    scheduler = Seq2SeqScheduler(max_queue=4, max_wait=0.1)
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []
    first = scheduler.start_job(lambda: (started.set(), release.wait(10)), size=1)
    assert await asyncio.to_thread(started.wait, 5)
    late = scheduler.start_job(lambda: ran.append("late"), size=1)
    await asyncio.sleep(0.2)  # past the late job's timeout while the first holds the worker
    release.set()
    await first
    with pytest.raises(ClientError) as refused:
        await late
    assert refused.value.status == 504 and ran == []
    await until(lambda: scheduler.depth == 0)
    await scheduler.drain()
