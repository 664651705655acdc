"""uvicorn's httptools protocol with a bound on each request's head: its size and the time it takes to arrive.

httptools buffers a header until its line ends, with no limit of its own, and uvicorn's keep-alive timer stops
once a request has begun: measured, two clients each sending a never-ending 150 MB header grew the server by
380 MB and held other clients' requests for 2 to 5 s, and a client that sends half a head and waits held its
connection for ever. Here a head past `max_head_bytes` is answered 431 and one slower than `read_timeout` 408,
and the connection is closed (as nginx and h11 bound a head); bodies are bounded by the routes
(`--max-payload-bytes`, `--read-timeout` in `api/body.py`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 256 * 1024  # request line and headers: clients send a few KB (nginx allows 32 KB); above one read


def bounded_protocol(read_timeout: float, max_head_bytes: int = MAX_HEAD_BYTES) -> type[HttpToolsProtocol]:
    """The protocol class for `uvicorn.Config(http=...)`, with these bounds."""

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_bytes = 0
            self._in_head = True  # a connection starts by waiting for a head
            self._head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._start_timer()  # the first head must come in time too, even when no byte does

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._in_head and self.transport is not None and not self.transport.is_closing():
                self._head_bytes += len(data)  # a head still unfinished after this read
                if self._head_bytes > max_head_bytes:
                    self._refuse(431, f"request head over {max_head_bytes} bytes")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._head_bytes = True, 0
            self._start_timer()

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._cancel_timer()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timer()
            super().connection_lost(exc)

        def _start_timer(self) -> None:
            if read_timeout and self._head_timer is None:
                self._head_timer = self.loop.call_later(read_timeout, self._head_too_slow)

        def _head_too_slow(self) -> None:
            self._head_timer = None
            if self._in_head and self.transport is not None and not self.transport.is_closing():
                self._refuse(408, f"request head not received within {read_timeout:g}s (--read-timeout)")

        def _cancel_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _refuse(self, status: int, message: str) -> None:
            """Answer with a JSON error and close: the rest of this connection's bytes are not read."""
            self._cancel_timer()
            body = json.dumps({"error": message}).encode()
            reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                                 b"connection: close\r\n\r\n%s" % (status, reason, len(body), body))
            self.transport.close()

    return BoundedHttpToolsProtocol
