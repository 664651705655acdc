"""Automatic prefix caching: the KV cache of finished sequences, kept for prompts that start the same way.

Chat requests share long beginnings: the chat template and system prompt before every user turn, and in a
multi-turn conversation the whole previous exchange. Recomputing them is most of a prompt's prefill, so
time to first token is mostly spent redoing work (llama.cpp's server, vLLM and TGI keep it for the same
reason). A decoder that leaves a sequence hands its tokens and their keys and values here; a later prompt
takes the longest cached beginning it shares with any entry and computes only the rest.

Entries are whole sequences (prompt + generated tokens whose keys are cached), matched token by token, so
there is no block size to tune and a hit may end anywhere. The store is bounded in bytes and evicts the
least recently used entry first. An entry that is a beginning of a newer one is dropped (the newer one
answers every lookup the older one would), and a sequence already covered by an entry only refreshes it.
Copies in and out are a few megabytes for a small model: far cheaper than the forward they save.

Every entry belongs to a scope (the tenant, and the request's `cache_salt` when it gives one): a prompt only
ever resumes from entries of its own scope. A shared cache would be a side channel: a faster first token, or
`cached_tokens` in OpenAI's usage, would tell one client, token by token, what another client's prompts began
with (vLLM salts its block hashes for the same reason).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Entry:
    """One cached sequence: its tokens and their keys/values, [layers x 2, kv_heads, len(tokens), head_dim]."""

    tokens: np.ndarray
    kv: np.ndarray
    scope: str = ""

    @property
    def nbytes(self) -> int:
        return int(self.kv.nbytes + self.tokens.nbytes)


def common_prefix(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> int:
    """How many leading tokens two token sequences share (the generation gate compares continuations with it)."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if len(differ) else n


class PrefixCache:
    """Least-recently-used entries within `budget_bytes`; a budget of 0 keeps nothing."""

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes < 0:
            raise ValueError(f"the prefix cache budget must be at least 0 bytes, not {budget_bytes}")
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self._ids = 0
        self.nbytes = 0
        self.hits = 0  # prompts that found a cached beginning
        self.misses = 0  # prompts that found none
        self.tokens_reused = 0  # prompt tokens not computed thanks to it

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, prompt: Sequence[int], scope: str = "") -> tuple[Entry | None, int]:
        """The entry of `scope` sharing the longest beginning with `prompt`, and that length (at most
        len(prompt) - 1).

        The last prompt token is always left to compute: its forward gives the next-token logits. The caller
        uses what it gets: a lookup counts as a hit (and its tokens as reused) or a miss.
        """
        if not self._entries or len(prompt) < 2:
            self.misses += 1
            return None, 0
        tokens = np.asarray(prompt, dtype=np.int64)
        best, best_key, best_len = None, -1, 0
        for key, entry in self._entries.items():
            if entry.scope != scope:
                continue
            shared = common_prefix(entry.tokens, tokens)
            if shared > best_len:
                best, best_key, best_len = entry, key, shared
        if best is None:
            self.misses += 1
            return None, 0
        self._entries.move_to_end(best_key)
        shared = min(best_len, len(prompt) - 1)
        self.hits += 1
        self.tokens_reused += shared
        return best, shared

    def add(self, tokens: Sequence[int], kv: np.ndarray, scope: str = "") -> None:
        """Keep a finished sequence's tokens and keys/values (an array the caller gives up) for prompts of `scope`."""
        if self.budget_bytes == 0 or len(tokens) < 2:
            return
        entry = Entry(np.asarray(tokens, dtype=np.int64), kv, scope)
        if entry.nbytes > self.budget_bytes:
            return
        for key, old in list(self._entries.items()):
            if old.scope != scope:
                continue
            shared = common_prefix(old.tokens, entry.tokens)
            if shared == len(entry.tokens):  # already covered: keep the longer one, now the most recent
                self._entries.move_to_end(key)
                return
            if shared == len(old.tokens):  # the new one covers the old one
                self._remove(key)
        while self._entries and self.nbytes + entry.nbytes > self.budget_bytes:
            self._remove(next(iter(self._entries)))
        self._ids += 1
        self._entries[self._ids] = entry
        self.nbytes += entry.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def _remove(self, key: int) -> None:
        self.nbytes -= self._entries.pop(key).nbytes
