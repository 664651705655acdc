"""Shutdown's notice to requests still open: answer them properly before the grace period runs out.

On SIGTERM uvicorn stops accepting connections and waits `--shutdown-grace` seconds for open ones; past that it
cancels them, and a client sees a connection cut mid-answer: a stream with no error event and no `[DONE]`, a
request with no status. So when shutdown begins (`begin`, called by the CLI's server), a timer fires just before
uvicorn's deadline and interrupts every request still open: a stream ends with an error event (and `[DONE]`
where its dialect sends one), any other request gets a 503 that says to retry elsewhere. Its sequence is
cancelled like a client's disconnect, so the models drain at once.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from squeezer.interrupt import Interrupt

MARGIN = 0.5  # seconds before uvicorn's deadline: time to write the last events
MESSAGE = "the server is shutting down; retry the request (on another replica)"


class Stopping:
    """The requests open now, and the timer that interrupts them once shutdown's grace is nearly spent."""

    def __init__(self) -> None:
        self._open: set[Interrupt] = set()
        self.expired = False

    def begin(self, grace: float) -> None:
        """Shutdown began (on the event loop): interrupt whatever is still open `grace - MARGIN` seconds from now."""
        asyncio.get_running_loop().call_later(max(0.0, grace - MARGIN), self._expire)

    def _expire(self) -> None:
        self.expired = True
        for interrupt in list(self._open):
            interrupt.fire()

    @contextmanager
    def watch(self) -> Iterator[Interrupt]:
        """Interrupt the current task (see `squeezer.interrupt`) if it is still running when the grace expires."""
        interrupt = Interrupt()
        if self.expired:
            interrupt.fire()
        self._open.add(interrupt)
        try:
            yield interrupt
        finally:
            self._open.discard(interrupt)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, telling the app's `Stopping` when shutdown begins, with the grace uvicorn will allow."""

    def __init__(self, config: uvicorn.Config, stopping: Stopping) -> None:
        super().__init__(config)
        self._stopping = stopping

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._stopping.begin(float(self.config.timeout_graceful_shutdown or 0))
        await super().shutdown(sockets)
