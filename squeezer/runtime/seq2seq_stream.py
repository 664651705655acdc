"""Token events of one encoder-decoder generation, as `generate` chooses them on the seq2seq worker.

They are the same `TokenEvent`s a decoder's stream carries, so every dialect streams both kinds alike.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from squeezer.generation.outputs import FinishReason, TokenEvent
from squeezer.scheduling.seq2seq import Seq2SeqScheduler
from squeezer.tasks.seq2seq import Seq2SeqParams


class Seq2SeqStream:
    """Each token is held until the next one arrives (or generation ends), so the last event can say it is the
    last and why. Closing the stream, or cancelling its reader, stops `generate` after its current step."""

    def __init__(self, generator: Any, tokenizer: Any, scheduler: Seq2SeqScheduler, prompt_ids: list[int],
                 params: Seq2SeqParams, finish: Callable[[int], FinishReason]) -> None:
        loop = asyncio.get_running_loop()
        self._tokenizer, self._finish, self._seed = tokenizer, finish, params.seed
        self._prompt_tokens = len(prompt_ids)
        self._tokens: asyncio.Queue[int | None | BaseException] = asyncio.Queue()
        self._stop = threading.Event()
        self._ids: list[int] = []
        self._sent = ""
        self._held: int | None = None
        self._done = False

        def job() -> Any:
            def on_token(token: int) -> None:
                loop.call_soon_threadsafe(self._tokens.put_nowait, token)

            return generator.generate([prompt_ids], params, on_token=on_token, stop=self._stop.is_set)

        self._job = scheduler.start_job(job)  # raises at once (429, unloading) before any event
        self._job.add_done_callback(self._ended)

    def _ended(self, job: asyncio.Future[Any]) -> None:
        failed = None if job.cancelled() else job.exception()
        self._tokens.put_nowait(failed)  # after every token: each was queued on the loop before the job returned

    def __aiter__(self) -> Seq2SeqStream:
        return self

    async def __anext__(self) -> TokenEvent:
        while not self._done:
            try:
                item = await self._tokens.get()
            except BaseException:  # the reader was cancelled
                await self.aclose()
                raise
            if isinstance(item, BaseException):
                self._done = True
                raise item
            held, self._held = self._held, item
            if item is None:  # generation ended: the held token is the last
                self._done = True
                if held is not None:
                    return self._event(held, last=True)
            elif held is not None:
                return self._event(held, last=False)
        raise StopAsyncIteration

    def _event(self, token: int, last: bool) -> TokenEvent:
        self._ids.append(token)
        text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        delta = ""
        if last or not text.endswith("\ufffd"):  # a byte-level token may end inside a character: wait for it
            delta, self._sent = text[len(self._sent) :], text
        reason = self._finish(token) if last else None
        return TokenEvent(token, delta, last, reason, self._prompt_tokens, len(self._ids), self._seed)

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._stop.set()
            self._job.cancel()

    def __del__(self) -> None:
        if not self._done:  # dropped unread (a client gone): only the flag, `generate` polls it
            self._stop.set()
