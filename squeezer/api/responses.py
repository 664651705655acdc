"""Shared response plumbing for every dialect: timing headers, and dropping work when the client leaves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse

from squeezer.api.stopping import MESSAGE
from squeezer.engine import Result
from squeezer.errors import ClientError
from squeezer.interrupt import Interrupt

T = TypeVar("T")


class FastJSONResponse(JSONResponse):
    """JSON encoded by orjson: same text for the same values (shortest float repr), several times faster
    than the standard library on embedding-sized float lists, which matters at hundreds of answers a second."""

    def render(self, content: object) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def result_headers(result: Result) -> dict[str, str]:
    """TEI-style timing headers in milliseconds, plus what the request was and whether it was cached."""
    t = result.timings
    headers = {
        "x-total-time": f"{t.total * 1000:.3f}",
        "x-queue-time": f"{t.queue * 1000:.3f}",
        "x-tokenization-time": f"{t.tokenize * 1000:.3f}",
        "x-inference-time": f"{t.inference * 1000:.3f}",
        "x-compute-time": f"{t.total:.6f}",
        "x-compute-type": "cpu",
        "x-squeezer-task": result.answer.task,
        "x-squeezer-input-tokens": str(result.answer.n_tokens),
        "x-squeezer-cache": "hit" if result.cached else "miss",
    }
    if result.answer.truncated:
        headers["x-squeezer-truncated"] = "true"
    return headers


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work` in this task, but cancel it (dropping its queued sequences) if the client disconnects:
    a watcher reads the connection and interrupts this task on `http.disconnect` (see `squeezer.interrupt`).
    A shutdown whose grace runs out first answers 503 instead (`squeezer.api.stopping`)."""
    with request.app.state.stopping.watch() as stopped:
        try:
            return await _unless_disconnected(request, work)
        except asyncio.CancelledError:
            if not stopped.claim():
                raise
            raise ClientError(MESSAGE, status=503) from None


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    interrupt = Interrupt()

    async def watch() -> None:
        try:
            while (await request.receive())["type"] != "http.disconnect":
                pass
        except Exception:  # nothing to watch on this connection: never report a disconnect
            return
        interrupt.fire()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not interrupt.claim():
            raise
        raise ClientError("client disconnected", status=499) from None
    finally:
        watcher.cancel()
