"""Interrupting the current task for a reason: only its own cancellation is claimed, others propagate."""

from __future__ import annotations

import asyncio

import pytest

from squeezer.interrupt import Interrupt


async def waits_for(interrupt_after: float | None) -> str:
    interrupt = Interrupt()
    if interrupt_after is not None:
        asyncio.get_running_loop().call_later(interrupt_after, interrupt.fire)
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        if not interrupt.claim():
            raise
        return "interrupted"
    return "finished"


async def test_its_own_cancellation_is_claimed_and_the_task_goes_on() -> None:
    task = asyncio.ensure_future(waits_for(0.01))
    assert await task == "interrupted"
    assert not task.cancelled() and task.cancelling() == 0


async def test_a_cancellation_from_elsewhere_propagates() -> None:
    task = asyncio.ensure_future(waits_for(None))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_needs_a_running_task() -> None:
    with pytest.raises(RuntimeError):  # no running loop, no task to interrupt
        Interrupt()
