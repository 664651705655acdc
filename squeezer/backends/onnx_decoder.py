"""The `Decoder` Protocol on onnxruntime: serves a graph written by `squeezer.compiler.decoder_graph`.

No torch here, so a compiled decoder serves from the `onnx` extra alone.

Cache layout, as in `torch_decoder`: each layer's keys and values live in one preallocated float32 array
[rows, kv_heads, capacity, head_dim]; a sequence owns a row, its tokens at columns [0, length); live
sequences fill rows 0..n-1 and a leaving one's row is refilled by moving the last row in. Rows grow by powers
of two, columns by 256-token chunks up to the context, and the store shrinks once it holds four times what
live sequences need.

No cache is ever copied per step. GroupQueryAttention shares past and present when both are bound (IOBinding)
to the same memory: it then writes each row's new keys at that row's own column `seqlens_k[row]` and reads
only its columns [0, seqlens_k[row]], so a step binds `store[:n]` as both past and present and the op updates
the store in place. Prefill binds the newcomers' rows `store[first:first + k]` (a contiguous slice, since rows
lead) the same way: the prompts are right-padded to the longest, run in one forward as a "first prompt"
(total_sequence_length = S), each with its own `seqlens_k` (length - 1). Verified against transformers
(tests/backends/test_onnx_decoder.py): GQA's causal mask keeps every real token from seeing the padding that
follows it, rotary positions start at 0 in each row, and a padding token's keys land in columns past the
row's length, which no later step reads before overwriting them. So prompts admitted together cost one forward.

Prefix caching (`squeezer.backends.prefix_cache`): a leaving sequence's tokens and cache columns are copied
out; a later prompt that begins the same way has that beginning copied into its row and runs only the rest,
as a "subsequent prompt" (total_sequence_length = the whole length, seqlens_k = length - 1, the new tokens
fed): GQA writes their keys after the copied ones and attends causally over both. ORT accepts that only for
a batch of one, so each such prompt is its own forward (still shorter than its share of a batched prefill).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from squeezer.backends.decoder import SlotDecoder, cache_size
from squeezer.backends.onnx_backend import graph_bytes, import_onnxruntime, session_options
from squeezer.backends.prefix_cache import Entry, PrefixCache

# ONNX Runtime's threads spin between ops rather than sleep. An encoder batch is a few large ops, where
# sleeping costs nothing; a decode step is ~100 small weight-only MatMuls of tens of microseconds each, and
# waking a sleeping thread for every one of them cost a third of a single-request step here (SmolLM2 int4,
# 2 threads: 80 -> 107 tokens/s with spinning). The spinning stops once the step loop goes idle.
SPINNING = True

FORMAT = 1  # the decoder.json format this module reads


class KVCache:
    """Every layer's keys then values, each a zero-filled numpy array [rows, kv_heads, capacity, head_dim].

    Zero-filled, never empty: GQA reads only each row's own columns, but uninitialised memory could hold
    NaN and a store is cheap to clear once.
    """

    def __init__(self, layers: int, kv_heads: int, head_dim: int) -> None:
        self._layers, self._kv_heads, self._head_dim = layers, kv_heads, head_dim
        self.arrays: list[np.ndarray] = []  # key_0, value_0, key_1, ...
        self.rows = 0
        self.capacity = 0

    def fit(self, rows: int, length: int, max_length: int) -> bool:
        """Make room for `rows` sequences of up to `length` tokens, with hysteresis; True when reallocated."""
        size = cache_size(self.rows, self.capacity, rows, length, max_length)
        if size is None:
            return False
        want_rows, want_cap = size
        shape = (want_rows, self._kv_heads, want_cap, self._head_dim)
        old: list[np.ndarray | None] = list(self.arrays) or [None] * (2 * self._layers)
        keep_rows, keep_cols = min(want_rows, self.rows), min(want_cap, self.capacity)
        self.arrays = []
        for array in old:
            new = np.zeros(shape, dtype=np.float32)
            if array is not None:
                new[:keep_rows, :, :keep_cols] = array[:keep_rows, :, :keep_cols]
            self.arrays.append(new)
        self.rows, self.capacity = want_rows, want_cap
        return True

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy one sequence's cache to another row (compaction after a sequence leaves)."""
        for array in self.arrays:
            array[dst, :, :length] = array[src, :, :length]

    def save(self, row: int, length: int) -> np.ndarray:
        """A copy of one row's first `length` columns of every array: [layers x 2, kv_heads, length, head_dim]."""
        return np.stack([array[row, :, :length] for array in self.arrays])

    def load(self, row: int, kv: np.ndarray, length: int) -> None:
        """Write the first `length` columns of a saved `kv` into a row (its later columns are overwritten next)."""
        for array, saved in zip(self.arrays, kv):
            array[row, :, :length] = saved[:, :length]

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.arrays)

    def clear(self) -> None:
        self.arrays, self.rows, self.capacity = [], 0, 0


class OnnxDecoder(SlotDecoder):
    """Decodes many sequences with one compiled decoder graph, each with a cache row (see the module doc)."""

    def __init__(self, session: Any, meta: dict[str, Any], max_sequences: int = 16, prefix_cache_bytes: int = 0,
                 weights_bytes: int = 0) -> None:
        if meta.get("format") != FORMAT:
            raise ValueError(f"decoder.json has format {meta.get('format')!r}; this squeezer reads format {FORMAT}")
        super().__init__(max_sequences, int(meta["max_length"]), frozenset(int(t) for t in meta["eos_token_ids"]))
        self._session = session
        self._ort = import_onnxruntime()
        self._layers = int(meta["num_layers"])
        self._vocab = int(meta["vocab_size"])
        self._cache_names = [(f"past_{kind}_{i}", f"present_{kind}_{i}") for i in range(self._layers)
                             for kind in ("key", "value")]
        self._store = KVCache(self._layers, int(meta["kv_heads"]), int(meta["head_dim"]))
        self._step_binding: Any = None
        self._step_bound: tuple[int, int] | None = None  # (rows, capacity) the step binding's cache views cover
        self._prefixes = PrefixCache(prefix_cache_bytes)
        self._history: dict[int, tuple[str, list[int]]] = {}  # each live sequence's scope and cached tokens (for a prefix cache)
        self._weights_bytes = weights_bytes
        self.meta = meta

    @classmethod
    def load(
        cls, folder: Path | str, threads: int = 0, max_sequences: int = 16, spinning: bool | None = None,
        prefix_cache_bytes: int = 0,
    ) -> OnnxDecoder:
        """Open `folder/decoder.onnx` with the serving session options of `onnx_backend` (threads, arena).

        `prefix_cache_bytes` bounds the prefix cache (`squeezer.backends.prefix_cache`); 0, the default, keeps
        none, so the compiler's gate and timings always measure whole prefills.
        """
        ort = import_onnxruntime()
        folder = Path(folder)
        meta = json.loads((folder / "decoder.json").read_text())
        options = session_options(threads, SPINNING if spinning is None else spinning)
        graph = folder / "decoder.onnx"
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        return cls(session, meta, max_sequences, prefix_cache_bytes, graph_bytes(graph))

    def prefill_many(self, prompts: Sequence[Sequence[int]], scopes: Sequence[str] | None = None) -> list[tuple[int, np.ndarray]]:
        """Prefill several prompts; [(handle, next-token logits)] in their order.

        Prompts with no cached beginning (in their scope) run from scratch, right-padded in one forward; each of
        the others continues from the prefix cache (see `_continue`). Their rows follow the live ones in that order.
        """
        lengths = [len(p) for p in prompts]
        self._check_prompts(lengths)
        scopes = list(scopes) if scopes is not None else [""] * len(prompts)
        first = len(self._rows)
        self._fit(first + len(prompts), max([*lengths, *self._lengths]))
        found = [(i, *self._prefixes.lookup(p, scopes[i])) for i, p in enumerate(prompts)]
        resumed = [(i, entry, shared) for i, entry, shared in found if entry is not None]
        fresh = [i for i, entry, _ in found if entry is None]
        logits = self._from_scratch(first, [prompts[i] for i in fresh])
        for row, (i, entry, shared) in enumerate(resumed, start=first + len(fresh)):
            logits.append(self._continue(row, prompts[i], entry, shared))
        order = fresh + [i for i, _, _ in resumed]
        handles = self._admit([lengths[i] for i in order])
        if self._prefixes.budget_bytes:
            self._history.update((handle, (scopes[i], list(prompts[i]))) for i, handle in zip(order, handles))
        for (_, _, shared), handle in zip(resumed, handles[len(fresh):]):
            self._reused[handle] = shared
        by_prompt = {i: (handle, row) for i, handle, row in zip(order, handles, logits)}
        return [by_prompt[i] for i in range(len(prompts))]

    def _from_scratch(self, first: int, prompts: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Prefill prompts into rows [first, first + len(prompts)) in one right-padded "first prompt" forward."""
        if not prompts:
            return []
        lengths = [len(p) for p in prompts]
        count, width = len(prompts), max(lengths)
        ids = np.zeros((count, width), dtype=np.int64)
        for i, prompt in enumerate(prompts):
            ids[i, : lengths[i]] = list(prompt)
        binding = self._session.io_binding()
        self._bind_cache(binding, first, count)
        last = np.arange(count, dtype=np.int64) * width + np.array(lengths, dtype=np.int64) - 1
        return list(self._run(binding, ids, np.array(lengths, dtype=np.int32) - 1, width, last))

    def _continue(self, row: int, prompt: Sequence[int], entry: Entry, shared: int) -> np.ndarray:
        """Prefill a prompt whose first `shared` tokens are cached: copy their keys in, run only the rest.

        One row per forward: GroupQueryAttention takes several new tokens after a cached past only for a
        batch of one (and a row's past is its seqlens_k + 1 minus the tokens it is fed).
        """
        self._store.load(row, entry.kv, shared)
        ids = np.array([prompt[shared:]], dtype=np.int64)
        binding = self._session.io_binding()
        self._bind_cache(binding, row, 1)
        last = np.array([ids.shape[1] - 1], dtype=np.int64)
        return self._run(binding, ids, np.array([len(prompt) - 1], dtype=np.int32), len(prompt), last)[0]

    def step(self, handles: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
        n = len(self._rows)
        order, width = self._step_order(handles, tokens)
        self._fit(n, width)
        if self._step_bound != (n, self._store.capacity):  # cache views change only when rows or columns do
            self._step_binding = self._session.io_binding()
            self._bind_cache(self._step_binding, 0, n)
            self._step_bound = (n, self._store.capacity)
        ids = np.empty((n, 1), dtype=np.int64)
        ids[order, 0] = tokens
        seqlens = np.array(self._lengths, dtype=np.int32)  # total length after this token, minus one
        logits = self._run(self._step_binding, ids, seqlens, width, np.arange(n, dtype=np.int64))
        self._lengths = [length + 1 for length in self._lengths]
        if self._history:
            for handle, token in zip(handles, tokens):
                self._history[handle][1].append(token)
        return logits if order == list(range(n)) else logits[order]

    def _fit(self, rows: int, length: int) -> None:
        if self._store.fit(rows, length, self._max_length):
            self._step_bound = None  # the arrays moved: the step binding points at freed memory

    def _bind_cache(self, binding: Any, first: int, count: int) -> None:
        """Bind rows [first, first + count) of every layer's store as both past and present (shared buffer)."""
        store = self._store
        shape = [count, *store.arrays[0].shape[1:]]
        offset = first * store.arrays[0][0].nbytes
        for (past, present), array in zip(self._cache_names, store.arrays):
            pointer = array.ctypes.data + offset
            binding.bind_input(past, "cpu", 0, np.float32, shape, pointer)
            binding.bind_output(present, "cpu", 0, np.float32, shape, pointer)

    def _run(self, binding: Any, ids: np.ndarray, seqlens: np.ndarray, total: int, index: np.ndarray) -> np.ndarray:
        """One forward with the cache already bound; returns logits [len(index), vocab] in a fresh array."""
        logits = np.empty((len(index), self._vocab), dtype=np.float32)
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("seqlens_k", seqlens)
        binding.bind_cpu_input("total_sequence_length", np.array(total, dtype=np.int32))
        binding.bind_cpu_input("logits_index", index)
        binding.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        self._session.run_with_iobinding(binding)
        return logits

    def warmup(self) -> None:
        """The shared warm-up, leaving the prefix cache empty and its counters at zero."""
        super().warmup()
        self._prefixes = PrefixCache(self._prefixes.budget_bytes)

    @property
    def prefix_cache(self) -> PrefixCache:
        """The prefix cache, for its counters (hits, tokens reused) and size."""
        return self._prefixes

    @property
    def memory_bytes(self) -> int:
        return self._weights_bytes + self._store.nbytes + self._prefixes.nbytes

    def release(self, handle: int) -> None:
        """Free a sequence's row, keeping its tokens' keys and values in the prefix cache first."""
        scope, tokens = self._history.pop(handle, ("", []))
        if tokens:
            row = self._row_of(handle)
            self._prefixes.add(tokens, self._store.save(row, self._lengths[row]), scope)
        super().release(handle)

    def _move_row(self, src: int, dst: int, length: int) -> None:
        self._store.move(src, dst, length)

    def _clear_cache(self) -> None:
        self._store.clear()
        self._step_binding, self._step_bound = None, None

    def close(self) -> None:
        self._store.clear()
        self._prefixes.clear()
        self._history.clear()
        self._rows, self._lengths = [], []
        self._step_binding, self._step_bound = None, None
        self._session = None
