"""Shared response plumbing for every dialect: timing headers, and dropping work when the client leaves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse

from squeezer.engine import Result
from squeezer.errors import ClientError

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
    """Await `work` in this task, but cancel it (dropping its queued sequences) if the client disconnects.

    A watcher task reads the connection and cancels this task on `http.disconnect`. Awaiting the work
    here, rather than in a task of its own raced against the watcher, saves a task and a wait per request:
    at hundreds of requests a second, the event loop's bookkeeping is a real share of one core.
    """
    current = asyncio.current_task()
    assert current is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        try:
            while (await request.receive())["type"] != "http.disconnect":
                pass
        except Exception:  # nothing to watch on this connection: never report a disconnect
            return
        gone = True
        current.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise
        if hasattr(current, "uncancel"):  # Python 3.11+: the cancellation was ours, and is answered here
            current.uncancel()
        raise ClientError("client disconnected", status=499) from None
    finally:
        watcher.cancel()
