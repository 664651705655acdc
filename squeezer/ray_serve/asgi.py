"""One HTTP request through an ASGI app in-process, its response given back as the app sends it: first
(status, headers), then each body part. A multiplexed model replica answers the router this way, so a streamed
generation reaches the client token by token (httpx's ASGI transport would hand back the whole body at the end)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

END = object()


async def asgi_parts(app: Any, method: str, target: str, headers: list[tuple[str, str]],
                     body: bytes) -> AsyncIterator[tuple[int, list[tuple[str, str]]] | bytes]:
    """(status, headers), then the body's parts; the app's task is cancelled if the reader stops early (a client
    that went away), which the app sees as a disconnect."""
    url = urlsplit(target)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": url.path, "raw_path": url.path.encode(), "query_string": url.query.encode(), "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers], "client": ("127.0.0.1", 0),
             "server": ("127.0.0.1", 80)}
    parts: asyncio.Queue[Any] = asyncio.Queue()
    delivered = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not delivered.is_set():
            delivered.set()
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # nothing more to read: wait until cancelled
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            await parts.put((message["status"], [(k.decode(), v.decode()) for k, v in message.get("headers", [])]))
        elif message["type"] == "http.response.body":
            if message.get("body"):
                await parts.put(bytes(message["body"]))
            if not message.get("more_body"):
                await parts.put(END)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            await parts.put(END)

    task = asyncio.create_task(run())
    try:
        while (part := await parts.get()) is not END:
            yield part
    finally:
        task.cancel()
