"""Bounded LRU caches for work that repeats: whole answers and tokenizations.

Bounded by entry count and by (approximate) bytes, so a flood of distinct large answers cannot grow memory;
hit and miss counts are kept for the metrics. Keys are charged too: a request's key can be as large as the request.

`SCOPE` names whose request is being answered (the tenant: see `squeezer.api.auth`); every cache that a client
could observe keys its entries by it, so one tenant never hits, or times, another's entries. The engine sets
it around a request; a context variable carries it down to tokenization without threading it through every task.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Hashable
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

V = TypeVar("V")
SCOPE: ContextVar[str] = ContextVar("squeezer_cache_scope", default="")


def approx_bytes(value: Any) -> int:
    """A cheap size estimate of a JSON-like value (8 bytes a number, the length of a string)."""
    if isinstance(value, (list, tuple)):
        return 8 + sum(approx_bytes(v) for v in value)
    if isinstance(value, dict):
        return 8 + sum(len(str(k)) + approx_bytes(v) for k, v in value.items())
    if isinstance(value, str):
        return len(value) + 8
    return 8


def request_key(*parts: Any) -> str | None:
    """A canonical key for a JSON-like request, or None when it cannot be serialized (not cacheable)."""
    try:
        return json.dumps(parts, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None


class LRUCache(Generic[V]):
    """Least-recently-used cache with an entry bound and an optional byte bound."""

    def __init__(self, max_entries: int, max_bytes: int = 0) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._bytes = 0
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> V | None:
        found = self._items.get(key)
        if found is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return found[0]

    def put(self, key: Hashable, value: V, size: int = 0) -> None:
        if self.max_entries <= 0 or (self.max_bytes and size > self.max_bytes):
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        self._items[key] = (value, size)
        self._bytes += size
        while len(self._items) > self.max_entries or (self.max_bytes and self._bytes > self.max_bytes):
            _, (_, evicted) = self._items.popitem(last=False)
            self._bytes -= evicted

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0
