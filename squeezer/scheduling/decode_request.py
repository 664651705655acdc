"""What travels between the event loop and the decode worker: a queued request (its token queue created on the
caller's loop before it is queued), the stream its caller reads, and the figures the worker reports for metrics.

Apart from `decoding` (the worker's schedule) so each file holds one concept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from squeezer.generation.outputs import FinishReason, TokenEvent
from squeezer.generation.params import GenerationParams


@dataclass(frozen=True)
class StepStats:
    """One batched step, for metrics: batch occupancy, queue depth and time per output token."""

    sequences: int
    slots: int
    waiting: int
    seconds: float


@dataclass(frozen=True)
class SequenceStats:
    """One sequence that left the batch, for metrics; `finish_reason` is None when cancelled or failed."""

    prompt_tokens: int
    generated_tokens: int
    queue_seconds: float
    time_to_first_token: float
    time_per_output_token: float
    finish_reason: FinishReason | None


@dataclass(eq=False)
class DecodeRequest:
    """One sequence to generate; `events` is created on the caller's event loop before it is queued."""

    prompt_ids: list[int]
    params: GenerationParams
    max_new_tokens: int
    seed: int | None
    events: asyncio.Queue[TokenEvent | BaseException]
    loop: asyncio.AbstractEventLoop
    scope: str = ""  # whose prefix-cache entries it may start from (see `squeezer.backends.prefix_cache`)
    arrived: float = field(default_factory=time.perf_counter)
    cancelled: bool = False  # set by the event loop, read by the worker: it frees the cache at the next step

    @property
    def reservation(self) -> int:
        return len(self.prompt_ids) + self.max_new_tokens


class TokenStream:
    """One sequence's token events, in order, ending with the event that has `is_last`.

    Closing it, cancelling the task that reads it, or dropping it before its last event (a client gone)
    cancels the sequence: its slot and cache are freed at the next step.
    """

    def __init__(self, request: DecodeRequest, cancel: Callable[[DecodeRequest], None]) -> None:
        self._request = request
        self._cancel = cancel
        self._done = False

    def __aiter__(self) -> TokenStream:
        return self

    async def __anext__(self) -> TokenEvent:
        if self._done:
            raise StopAsyncIteration
        try:
            item = await self._request.events.get()
        except BaseException:  # the reader was cancelled
            await self.aclose()
            raise
        self._done = isinstance(item, BaseException) or item.is_last
        if isinstance(item, BaseException):
            raise item
        return item

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._cancel(self._request)

    def __del__(self) -> None:
        if not self._done:  # only the flag: a finalizer must not take the loop's lock
            self._request.cancelled = True
