"""The dynamic batcher with a deterministic fake model: order, grouping, bounds, failures."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from squeezer.backends import Batch
from squeezer.config import BatchingConfig
from squeezer.errors import ModelNotReadyError, QueueFullError
from squeezer.scheduling import Batcher, BatchStats, WorkItem
from squeezer.scheduling.batcher import take_batch
from squeezer.tasks.base import Feature
from tests.helpers import kill_thread, until


class FakeModel:
    """Answers each row with the sum of its real tokens; records every batch; can be slowed or broken."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.batches: list[np.ndarray] = []
        self.alone: list[bool] = []  # each batch's `alone` mark, in the order they reach the model
        self.calls = 0  # batches taken and handed to the model, counted before the gate
        self.delay = delay
        self.fail = fail
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch: Batch) -> list[dict[str, np.ndarray]]:
        self.calls += 1
        self.alone.append(batch.alone)  # in the order the batches are taken
        self.gate.wait(5)
        if self.fail:
            raise RuntimeError("backend exploded")
        self.batches.append(batch.input_ids)
        if self.delay:
            threading.Event().wait(self.delay)
        sums = (batch.input_ids * batch.attention_mask).sum(axis=1)
        return [{"sum": np.array(s)} for s in sums]


def feature(n: int, value: int = 1) -> Feature:
    return Feature([value] * n)


async def start(model: FakeModel, **config: float) -> Batcher:
    batcher = Batcher(model, 0, BatchingConfig(**config))  # type: ignore[arg-type]
    batcher.start()
    return batcher


async def test_answers_come_back_in_order_for_every_request() -> None:
    model = FakeModel(delay=0.01)
    batcher = await start(model)
    requests = [[feature(n, value) for n in (3, 1, 7)] for value in range(1, 30)]
    results = await asyncio.gather(*(batcher.submit(r) for r in requests))
    for value, done in zip(range(1, 30), results):
        assert [int(r["sum"]) for r in done.outputs] == [3 * value, 1 * value, 7 * value]
        assert done.queue_seconds >= 0 and done.inference_seconds >= 0.01
    assert len(model.batches) < len(requests) * 3, "concurrent requests should share batches"
    await batcher.close()


def test_take_batch_keeps_oldest_and_respects_budget() -> None:
    loop = asyncio.new_event_loop()
    items = [WorkItem(feature(n), loop.create_future()) for n in (10, 50, 11, 9, 12, 100)]
    chosen = take_batch(items, BatchingConfig(max_batch_tokens=48, max_batch_size=8, max_padding_ratio=1.3))
    assert items[0] in chosen
    assert [it.length for it in chosen] == [9, 10, 11, 12]  # nearest lengths, sorted, 4 x 12 <= 48
    chosen = take_batch(items, BatchingConfig(max_batch_tokens=10_000, max_batch_size=2))
    assert len(chosen) == 2
    loop.close()


def test_lengths_far_apart_go_to_separate_batches() -> None:
    loop = asyncio.new_event_loop()
    items = [WorkItem(feature(n), loop.create_future()) for n in (10, 60, 12, 58, 11)]
    first = take_batch(items, BatchingConfig(max_padding_ratio=1.3))
    assert [it.length for it in first] == [10, 11, 12]
    rest = [it for it in items if it not in first]
    assert [it.length for it in take_batch(rest, BatchingConfig(max_padding_ratio=1.3))] == [58, 60]
    loop.close()


def test_a_sequence_longer_than_the_budget_still_runs_alone() -> None:
    loop = asyncio.new_event_loop()
    items = [WorkItem(feature(500), loop.create_future()), WorkItem(feature(5), loop.create_future())]
    assert take_batch(items, BatchingConfig(max_batch_tokens=100)) == [items[0]]
    loop.close()


async def test_queue_bound_answers_429_at_once() -> None:
    model = FakeModel()
    model.gate.clear()  # the model is stuck: nothing leaves the queue
    batcher = await start(model, max_queue=4, max_batch_size=1)
    first = asyncio.create_task(batcher.submit([feature(2)]))
    await until(lambda: model.calls == 1)  # taken by the worker, now running (stuck)
    queued = asyncio.create_task(batcher.submit([feature(2)] * 4))
    await until(lambda: batcher.depth == 4)  # the queue is full
    with pytest.raises(QueueFullError) as err:
        await batcher.submit([feature(2)])
    assert err.value.status == 429
    model.gate.set()
    assert len((await queued).outputs) == 4 and len((await first).outputs) == 1
    await batcher.close()


async def test_cancelled_request_is_dropped_before_running() -> None:
    model = FakeModel()
    model.gate.clear()
    batcher = await start(model, max_batch_size=1)
    running = asyncio.create_task(batcher.submit([feature(1, 1)]))
    await until(lambda: model.calls == 1)  # taken by the worker, now running (stuck)
    doomed = asyncio.create_task(batcher.submit([feature(1, 7)]))
    await until(lambda: batcher.depth == 1)  # queued behind it
    doomed.cancel()
    model.gate.set()
    await running
    await batcher.submit([feature(1, 3)])  # queued after the doomed one: once answered, the doomed one had its turn
    assert all(7 not in b for b in model.batches) and any(3 in b for b in model.batches)
    assert batcher.depth == 0
    await batcher.close()


async def test_backend_failure_answers_every_waiting_request() -> None:
    batcher = await start(FakeModel(fail=True))
    results = await asyncio.gather(*(batcher.submit([feature(3)]) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    await batcher.close()


async def test_batch_stats_are_reported() -> None:
    seen: list[BatchStats] = []
    batcher = Batcher(FakeModel(), 0, BatchingConfig(max_padding_ratio=1.1), on_batch=seen.append)  # 20 padded for 19
    batcher.start()
    await batcher.submit([feature(9), feature(10)])
    assert seen and seen[0].size == 2 and seen[0].real_tokens == 19 and seen[0].padded_tokens == 20
    await batcher.close()


async def test_drain_finishes_queued_work_then_refuses_new() -> None:
    from squeezer.errors import ModelNotReadyError

    batcher = await start(FakeModel(delay=0.02), max_batch_size=1)
    waiting = [asyncio.create_task(batcher.submit([feature(2)])) for _ in range(3)]
    await asyncio.sleep(0)
    await batcher.drain()
    assert all(len(t.result().outputs) == 1 for t in waiting)
    with pytest.raises(ModelNotReadyError):
        await batcher.submit([feature(1)])


async def test_workers_run_batches_at_once_and_keep_every_answer() -> None:
    both_running = threading.Barrier(2, timeout=5)  # a batch returns only once another runs beside it

    def model(batch: Batch) -> list[dict[str, np.ndarray]]:
        both_running.wait()
        return [{"sum": np.array(s)} for s in (batch.input_ids * batch.attention_mask).sum(axis=1)]

    batcher = Batcher(model, 0, BatchingConfig(max_batch_size=1), workers=2)
    batcher.start()
    results = await asyncio.gather(*(batcher.submit([feature(n, value=2)]) for n in range(1, 9)))
    assert [int(r.outputs[0]["sum"]) for r in results] == [2 * n for n in range(1, 9)]
    await batcher.close()



async def test_a_feature_that_cannot_be_padded_fails_its_batch_not_the_worker() -> None:
    """Padding runs on the worker thread too: a failure there answers the batch's requests with the error, and
    the worker goes on to the next batch (before, the thread died and every later request hung)."""
    model = FakeModel()
    batcher = await start(model, max_wait_ms=0)
    with pytest.raises(Exception):
        await asyncio.wait_for(batcher.submit([Feature(["not", "a", "token"])]), 5)  # type: ignore[list-item]
    done = await asyncio.wait_for(batcher.submit([feature(3, 2)]), 5)
    assert int(done.outputs[0]["sum"]) == 6
    await asyncio.wait_for(batcher.drain(), 5)  # nothing is left counted in flight


async def test_a_worker_killed_mid_forward_answers_everyone_and_then_refuses() -> None:
    """The thread ended from outside (RELIABILITY.md, faults): the batch it ran and the queue behind it are
    answered with a 503 that says why, and later requests are refused at once, never queued for nobody."""
    model = FakeModel()
    model.gate.clear()
    batcher = await start(model, max_wait_ms=0)
    running = asyncio.ensure_future(batcher.submit([feature(3)]))
    await until(lambda: model.calls == 1)
    kill_thread("squeezer-forward-0")  # raised once the forward's wait returns to Python
    queued = asyncio.ensure_future(batcher.submit([feature(5)]))
    await until(lambda: batcher.depth == 1)
    model.gate.set()
    for request in (running, queued):
        with pytest.raises(ModelNotReadyError, match="worker thread stopped"):
            await asyncio.wait_for(request, 10)
    with pytest.raises(ModelNotReadyError, match="worker thread stopped"):
        await asyncio.wait_for(batcher.submit([feature(2)]), 1)
    await asyncio.wait_for(batcher.drain(), 5)  # nothing left behind for a drain to wait on


async def test_only_a_batch_that_had_company_waits_for_more() -> None:
    """The wait window is for load: after a batch of one, a lone closed-loop client's next request runs at once
    (before, every one waited the whole window after the first); after a batch of several, a request waits for
    company within the window and shares its batch with the one that comes."""
    model = FakeModel()
    batcher = await start(model, max_wait_ms=2000)
    for n in range(1, 6):  # each would wait 2 s if the window applied: the 1.5 s bound fails it
        done = await asyncio.wait_for(batcher.submit([feature(n)]), 1.5)
        assert int(done.outputs[0]["sum"]) == n
    assert [len(b) for b in model.batches] == [1] * 5

    batcher = await start(model, max_wait_ms=500)
    model.batches.clear()
    model.gate.clear()
    first = asyncio.ensure_future(batcher.submit([feature(2)]))
    await until(lambda: model.calls == 6)
    crowd = [asyncio.ensure_future(batcher.submit([feature(3)])) for _ in range(3)]
    await until(lambda: batcher.depth == 3)
    model.gate.set()
    await asyncio.gather(first, *crowd)  # a batch of one, then the crowd of three together
    lone = asyncio.ensure_future(batcher.submit([feature(4)]))
    await asyncio.sleep(0.05)
    assert not lone.done()  # waiting for company
    company = asyncio.ensure_future(batcher.submit([feature(4, value=2)]))  # the same length: no padding between them
    assert [int(r.outputs[0]["sum"]) for r in await asyncio.gather(lone, company)] == [4, 8]
    assert [len(b) for b in model.batches] == [1, 3, 2]
    await batcher.close()


async def test_a_batch_is_marked_alone_only_with_nothing_else_running_or_waiting() -> None:
    """The mark lets a backend with instances run the batch on every core: a lone request's batch has it; a
    batch taken while another runs, or that leaves others waiting, keeps to one instance."""
    model = FakeModel()
    batcher = Batcher(model, 0, BatchingConfig(max_wait_ms=0), workers=2)
    batcher.start()
    await batcher.submit([feature(3)])
    assert model.alone == [True]
    model.gate.clear()
    running = asyncio.ensure_future(batcher.submit([feature(3)]))  # alone, held in the model
    await until(lambda: model.calls == 2)
    beside = asyncio.ensure_future(batcher.submit([feature(3)]))  # the other worker takes it while one runs
    await until(lambda: model.calls == 3)
    model.gate.set()
    await asyncio.gather(running, beside)
    assert model.alone == [True, True, False]
    model.alone.clear()
    model.gate.clear()
    held = asyncio.ensure_future(batcher.submit([feature(3)]))
    await until(lambda: model.calls == 4)
    queued = [asyncio.ensure_future(batcher.submit([feature(n)])) for n in (2, 60)]  # too far apart to share
    await until(lambda: model.calls == 5)  # the second worker took one, the other waits
    model.gate.set()
    await asyncio.gather(held, *queued)
    assert model.alone[:2] == [True, False]  # the last may find the others done: it is timing's to say
    await batcher.close()
