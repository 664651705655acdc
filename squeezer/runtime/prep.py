"""One thread per model for request preparation: parsing, chat templates, tokenizing.

Preparing a request costs as much as its text: 40 ms for one 100k-character input to MiniLM's tokenizer on this
class of machine, seconds for zero-shot's 128 labels over such a text or for a 2 MB chat. On the event loop that
time would stall every other client, `/health` included. Here the loop only hands the work over and awaits it.

One thread, not a pool: the transformers tokenizer reconfigures its Rust core when truncation changes, which two
threads encoding at once would race on; with every encode of a model on its own thread (decoding tokens, which
the loop and the decode worker do, only reads it), no tokenizer is ever shared by two encoders. A model's
requests are prepared in arrival order, and one model's long preparation never delays another's.
Long texts are tokenized with the Rust batch call, which releases the GIL (see `squeezer.tasks.base`).

A request being prepared is accepted work: `drain` (unload, shutdown) refuses new preparations and waits for
those under way, whose callers queue their work before the count drops (no await between the two), so the
scheduler's own drain then finishes them.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from squeezer.errors import UNLOADING, ModelNotReadyError

T = TypeVar("T")


class PrepThread:
    """Runs a model's request preparation off the event loop, in order, on one thread started on first use."""

    def __init__(self, model_id: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"squeezer-prep-{model_id}"[:40])
        self._pending = 0
        self._draining = True  # until the runtime starts

    def accept(self) -> None:
        """Take work (the runtime started, or started again after a drain)."""
        self._draining = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the thread, in the caller's context (the cache scope travels with it)."""
        if self._draining:
            raise ModelNotReadyError(UNLOADING)
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, call)
        finally:
            self._pending -= 1

    async def drain(self) -> None:
        """Refuse new preparations; return once those under way have handed their work on (or failed)."""
        self._draining = True
        while self._pending:
            await asyncio.sleep(0.005)

    def close(self) -> None:
        """Stop the thread once what it runs now is done; nothing queued behind it starts."""
        self._pool.shutdown(wait=False, cancel_futures=True)
