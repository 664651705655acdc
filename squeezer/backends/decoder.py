"""The narrow contract between the decode loop and whatever runs a causal language model.

A decoder owns the KV cache of every live sequence; the loop only ever sees opaque handles and logits. That
keeps the loop (admission, sampling, streaming) independent of how the cache is laid out, so an ONNX decoder
can implement the same calls with its own cache layout. Logits cross the boundary as float32 numpy rows,
as encoder backends' outputs do (`squeezer.backends.base`), so no backend type leaks into the scheduler.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from squeezer.backends.prefix_cache import PrefixCache

CHUNK = 256  # cache columns are allocated in chunks of this many tokens
SHRINK = 4  # a cache store shrinks once it holds this many times what live sequences need


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

    @property
    def memory_bytes(self) -> int:
        """Bytes held now: the weights, the live sequences' KV cache and the prefix cache (the memory budget's
        measure: a GGUF model dequantized to float32 holds several times its file)."""

    @property
    def prefix_cache(self) -> PrefixCache | None:
        """The cache of finished sequences that later prompts may begin from, when this decoder keeps one."""

    def cached_tokens(self, handle: int) -> int:
        """How many of a live sequence's prompt tokens came from the prefix cache rather than a prefill."""

    def prefill(self, prompt_ids: Sequence[int], scope: str = "") -> tuple[int, np.ndarray]:
        """Run a prompt, keep its cache, and return (handle, next-token logits [vocab])."""

    def prefill_many(self, prompts: Sequence[Sequence[int]], scopes: Sequence[str] | None = None) -> list[tuple[int, np.ndarray]]:
        """Run several prompts at once, keeping each one's cache: [(handle, logits [vocab])] in their order.

        `scopes` (one per prompt; "" for all when None) say whose prefix-cache entries a prompt may start from
        and whose its finished sequence joins (see `squeezer.backends.prefix_cache`).

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


def cache_size(rows: int, capacity: int, want_rows: int, length: int, max_length: int) -> tuple[int, int] | None:
    """The (rows, capacity) a cache store of `rows` x `capacity` should be resized to, or None to keep it.

    Shared by every decoder so their memory follows the batch the same way: rows grow by powers of two and
    columns by CHUNK-token chunks up to the context (a realloc copies the store, so rarely), and the store
    shrinks only once it holds SHRINK times what live sequences need (hysteresis, no thrashing).
    """
    new_rows = 1 << max(0, want_rows - 1).bit_length()
    new_capacity = min(-(-length // CHUNK) * CHUNK, max_length)
    too_small = new_rows > rows or new_capacity > capacity
    too_big = rows * capacity > SHRINK * new_rows * new_capacity
    return (new_rows, new_capacity) if too_small or too_big else None


def context_length(config: Any) -> int:
    """The model's context; a sliding window bounds it, since decoders attend with a full (non-sliding) mask."""
    length = getattr(config, "max_position_embeddings", None) or 2048
    window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
    return min(length, window) if isinstance(window, int) and window > 0 else length


def eos_ids(model: Any) -> frozenset[int]:
    """EOS tokens as `generate` reads them: the generation config first, the model config otherwise."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    if eos is None:
        return frozenset()
    return frozenset([eos] if isinstance(eos, int) else eos)


class SlotDecoder:
    """The sequence bookkeeping every `Decoder` shares: which handle owns each cache row, and its length.

    Live sequences fill rows 0..n-1 and a leaving sequence's row is refilled by moving the last row in, so a
    subclass only says how its cache moves a row (`_move_row`) and empties (`_clear_cache`), and runs its
    forwards; the limits, handle lookups, step validation and compaction are written once, here.
    """

    def __init__(self, max_sequences: int, max_length: int, eos: frozenset[int]) -> None:
        self._max_sequences, self._max_length, self._eos = max_sequences, max_length, eos
        self._ids = itertools.count()
        self._rows: list[int] = []  # handle of the sequence in each row
        self._lengths: list[int] = []  # tokens cached in each row
        self._reused: dict[int, int] = {}  # handle -> prompt tokens taken from a prefix cache (when any)

    @property
    def max_sequences(self) -> int:
        return self._max_sequences

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self._eos

    @property
    def live(self) -> int:
        return len(self._rows)

    @property
    def prefix_cache(self) -> PrefixCache | None:
        return None

    def cached_tokens(self, handle: int) -> int:
        self._row_of(handle)  # a KeyError for a handle that is not live
        return self._reused.get(handle, 0)

    def prefill(self, prompt_ids: Sequence[int], scope: str = "") -> tuple[int, np.ndarray]:
        [result] = self.prefill_many([prompt_ids], [scope])  # type: ignore[attr-defined]
        return result  # type: ignore[no-any-return]

    def _check_prompts(self, lengths: Sequence[int]) -> None:
        if not lengths:
            raise ValueError("prefill needs at least one prompt")
        for length in lengths:
            if not 0 < length < self._max_length:
                raise ValueError(f"a prompt must have 1 to {self._max_length - 1} tokens, got {length}")
        if len(self._rows) + len(lengths) > self._max_sequences:
            raise RuntimeError(f"all {self._max_sequences} sequence slots are taken")

    def _admit(self, lengths: Sequence[int]) -> list[int]:
        """Give prefilled prompts (now in the rows after the live ones) their handles."""
        handles = [next(self._ids) for _ in lengths]
        self._rows.extend(handles)
        self._lengths.extend(lengths)
        return handles

    def _step_order(self, handles: Sequence[int], tokens: Sequence[int]) -> tuple[list[int], int]:
        """Each handle's row, and the width the step attends over; refuses a step that skips a sequence."""
        n = len(self._rows)
        order = [self._row_of(h) for h in handles]
        if len(set(order)) != n or len(tokens) != n:
            raise ValueError(f"a step must feed one token to each of the {n} live sequences")
        width = max(self._lengths) + 1
        if width > self._max_length:
            raise ValueError(f"a sequence reached the model's context of {self._max_length} tokens")
        return order, width

    def _row_of(self, handle: int) -> int:
        try:
            return self._rows.index(handle)
        except ValueError:
            raise KeyError(f"no live sequence {handle}") from None

    def release(self, handle: int) -> None:
        """Free a sequence's row: the last row moves into it, so rows 0..n-1 stay the live ones."""
        row, last = self._row_of(handle), len(self._rows) - 1
        self._reused.pop(handle, None)
        if row != last:
            self._move_row(last, row, self._lengths[last])
            self._rows[row], self._lengths[row] = self._rows[last], self._lengths[last]
        self._rows.pop()
        self._lengths.pop()
        if not self._rows:
            self._clear_cache()

    def _move_row(self, src: int, dst: int, length: int) -> None:
        raise NotImplementedError

    def _clear_cache(self) -> None:
        raise NotImplementedError

    def warmup(self) -> None:
        handle, logits = self.prefill([0, 1, 2, 3])
        self.step([handle], [int(logits.argmax())])  # type: ignore[attr-defined]
        self.release(handle)
