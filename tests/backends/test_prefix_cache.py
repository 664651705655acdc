"""The prefix cache's bookkeeping: longest match, the last token left to compute, dedupe, byte-bounded LRU."""

from __future__ import annotations

import numpy as np
import pytest

from squeezer.backends.prefix_cache import PrefixCache, common_prefix


def kv(tokens: int, fill: float = 0.0) -> np.ndarray:
    """A stand-in for saved keys/values: [layers x 2, kv_heads, tokens, head_dim] (here 1 x 1 x tokens x 4)."""
    return np.full((1, 1, tokens, 4), fill, dtype=np.float32)


def entry_bytes(tokens: int) -> int:
    return kv(tokens).nbytes + tokens * 8


def test_common_prefix() -> None:
    a = np.array([1, 2, 3, 4])
    assert common_prefix(a, np.array([1, 2, 9])) == 2
    assert common_prefix(a, np.array([1, 2])) == 2
    assert common_prefix(a, np.array([7])) == 0


def test_lookup_takes_the_longest_shared_beginning_and_leaves_the_last_token() -> None:
    cache = PrefixCache(1 << 20)
    cache.add([1, 2, 3, 4, 5], kv(5, 1.0))
    cache.add([1, 2, 9, 9], kv(4, 2.0))
    entry, shared = cache.lookup([1, 2, 3, 4, 7, 8])
    assert shared == 4 and entry is not None and entry.kv[0, 0, 0, 0] == 1.0
    entry, shared = cache.lookup([1, 2, 9, 9, 9])
    assert shared == 4 and entry is not None and entry.kv[0, 0, 0, 0] == 2.0
    entry, shared = cache.lookup([1, 2, 3, 4, 5])  # the whole prompt is cached: its last token still runs
    assert shared == 4
    assert cache.lookup([8, 1, 2]) == (None, 0)
    assert cache.lookup([1]) == (None, 0)  # a one-token prompt has nothing to reuse
    assert (cache.hits, cache.misses, cache.tokens_reused) == (3, 2, 12)


def test_a_covered_sequence_is_not_stored_twice_and_a_covering_one_replaces_it() -> None:
    cache = PrefixCache(1 << 20)
    cache.add([1, 2, 3], kv(3))
    cache.add([1, 2, 3, 4, 5], kv(5))  # covers the first: it goes
    assert len(cache) == 1 and cache.nbytes == entry_bytes(5)
    cache.add([1, 2], kv(2))  # covered by the kept one: nothing new
    assert len(cache) == 1 and cache.nbytes == entry_bytes(5)


def test_the_budget_evicts_the_least_recently_used_first() -> None:
    cache = PrefixCache(3 * entry_bytes(4))
    for first in (10, 20, 30):
        cache.add([first, 1, 2, 3], kv(4))
    cache.lookup([10, 1, 5])  # 10... is now the most recent
    cache.add([40, 1, 2, 3], kv(4))
    assert len(cache) == 3 and cache.nbytes <= cache.budget_bytes
    assert cache.lookup([20, 1, 2])[0] is None  # the oldest unused one went
    assert cache.lookup([10, 1, 2])[1] == 2 and cache.lookup([40, 1, 2])[1] == 2
    cache.add(list(range(100)), kv(100))  # larger than the whole budget: not kept, nothing evicted
    assert len(cache) == 3


def test_a_zero_budget_keeps_nothing_and_a_negative_one_is_refused() -> None:
    cache = PrefixCache(0)
    cache.add([1, 2, 3], kv(3))
    assert len(cache) == 0 and cache.lookup([1, 2, 3, 4]) == (None, 0)
    with pytest.raises(ValueError, match="at least 0"):
        PrefixCache(-1)


def test_a_prompt_only_resumes_from_its_own_scope() -> None:
    """Scopes are tenants: the same tokens cached for one are a miss for another, and neither replaces the other."""
    cache = PrefixCache(1 << 20)
    cache.add([1, 2, 3, 4, 5], kv(5, 1.0), scope="a")
    assert cache.lookup([1, 2, 3, 4, 5, 6], scope="b") == (None, 0)
    assert cache.lookup([1, 2, 3, 4, 5, 6]) == (None, 0)  # the unscoped default is a scope too
    cache.add([1, 2, 3, 4, 5, 6], kv(6, 2.0), scope="b")  # covers a's entry, but may not drop it
    assert len(cache) == 2
    entry, shared = cache.lookup([1, 2, 3, 4, 5, 9], scope="a")
    assert shared == 5 and entry is not None and entry.kv[0, 0, 0, 0] == 1.0 and entry.scope == "a"
    entry, shared = cache.lookup([1, 2, 3, 4, 5, 6, 7], scope="b")
    assert shared == 6 and entry is not None and entry.kv[0, 0, 0, 0] == 2.0
