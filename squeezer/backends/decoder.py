"""The narrow contract between the decode loop and whatever runs a causal language model.

A decoder owns the KV cache of every live sequence; the loop only ever sees opaque handles and logits. That
keeps the loop (admission, sampling, streaming) independent of how the cache is laid out, so an ONNX decoder
can implement the same calls with its own cache layout. Logits cross the boundary as float32 numpy rows,
as encoder backends' outputs do (`squeezer.backends.base`), so no backend type leaks into the scheduler.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Decoder(Protocol):
    """A loaded causal LM that decodes many sequences, each with its own cache, one token per step.

    Calls come from one thread at a time (the decode loop's worker); implementations need no locking.
    """

    @property
    def max_sequences(self) -> int:
        """Most sequences that may hold a cache at once."""

    @property
    def max_length(self) -> int:
        """Most tokens (prompt + generated) one sequence may reach: the model's context."""

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Tokens that end a sequence, as the model's generation config declares them."""

    @property
    def live(self) -> int:
        """Sequences currently holding a cache."""

    def prefill(self, prompt_ids: Sequence[int]) -> tuple[int, np.ndarray]:
        """Run a prompt, keep its cache, and return (handle, next-token logits [vocab])."""

    def prefill_many(self, prompts: Sequence[Sequence[int]]) -> list[tuple[int, np.ndarray]]:
        """Run several prompts at once, keeping each one's cache: [(handle, logits [vocab])] in their order.

        Requests that arrive together are prefilled in one forward rather than one after another, so the last
        of them does not wait for every other prompt before its first token. All or nothing: a bad prompt
        fails the call and no cache is kept.
        """

    def step(self, handles: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
        """Append one token to every live sequence in one batched forward.

        `handles` must name every live sequence (in any order); returns logits [len(handles), vocab] in that
        order. Stepping all of them at once is what lets a decoder keep its batch dense.
        """

    def release(self, handle: int) -> None:
        """Free a sequence's cache at once (finished or cancelled)."""

    def warmup(self) -> None:
        """Run a tiny prefill and step so the first request does not pay for lazy initialisation."""

    def close(self) -> None:
        """Release the model and every cache."""
