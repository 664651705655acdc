"""A causal-LM decoder on torch with a slot-based KV cache, shaped for continuous batching on the CPU.

Cache layout. Each layer's keys and values live in one preallocated tensor [rows, kv_heads, capacity,
head_dim]. A sequence owns a row and its tokens sit at columns [0, length), right where prefill wrote them.
Nothing is left-padded: a left-padded batch cache (one shared write column) must re-pad every sequence when
a longer one joins and trim them all when the longest leaves, while here a newcomer is written once and the
others are untouched. Live sequences are kept in rows 0..n-1 (a leaving sequence's row is refilled by moving
the last row into it: one sequence's cache, copied once), so every step attends over plain views
`keys[:n, :, :width]`, with no gather and no torch.cat: a step writes only the n new columns (one index_put
per layer, each row at its own position) instead of copying every cache the way DynamicCache's concatenation
does. (With grouped-query attention and a mask, transformers' sdpa path still expands the viewed keys and
values to all heads, as it does for any padded batch.)

A step feeds one token per row with explicit position ids (each row's own length) and a 4D mask that hides
the columns past each row's length; transformers passes a 4D mask through untouched, so the model code is
the stock one. Prefill runs prompts admitted together in one forward: right-padded, with a padding mask
and each row's own positions, so a real token attends to exactly what it would alone and a burst of
newcomers costs one forward instead of one each (time to first token under load); each row's keys land at
its columns [0, length). Rows grow by powers of two and columns by 256-token chunks (a realloc copies the store, rarely);
the store shrinks when it holds four times what live sequences need and is freed when none is left, so
memory follows the batch the scheduler admits. Runs in float32 under torch.inference_mode.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from squeezer import gguf_cache
from squeezer.backends.decoder import SlotDecoder, cache_size, context_length, eos_ids
from squeezer.backends.torch_backend import import_torch, module_bytes, pretrained
from squeezer.config import ModelConfig
from squeezer.hardware import available_cpus
from squeezer.sources import ModelSource, resolve


class KVStore:
    """Every layer's keys and values in [rows, kv_heads, capacity, head_dim] tensors, allocated lazily.

    A layer's head count and size come from the first tensor written to it, so no model config is parsed.
    """

    def __init__(self, torch: Any) -> None:
        self._torch = torch
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self.rows = 0
        self.capacity = 0

    def fit(self, rows: int, length: int, max_length: int) -> None:
        """Make room for `rows` sequences of up to `length` tokens, growing or shrinking with hysteresis."""
        size = cache_size(self.rows, self.capacity, rows, length, max_length)
        if size:
            want_rows, want_cap = size
            self.keys = [self._resized(t, want_rows, want_cap) for t in self.keys]
            self.values = [self._resized(t, want_rows, want_cap) for t in self.values]
            self.rows, self.capacity = want_rows, want_cap

    def _resized(self, old: Any, rows: int, capacity: int) -> Any:
        new = self._torch.zeros((rows, old.shape[1], capacity, old.shape[3]), dtype=old.dtype)
        keep_rows, keep_cols = min(rows, old.shape[0]), min(capacity, old.shape[2])
        new[:keep_rows, :, :keep_cols] = old[:keep_rows, :, :keep_cols]
        return new

    def layer(self, index: int, like: Any) -> tuple[Any, Any]:
        """The layer's (keys, values) store; created at the current size on its first write.

        Zero-filled, never empty: masked columns get zero attention weight, but 0 x NaN from uninitialised
        memory would still poison the output.
        """
        if index == len(self.keys):
            shape = (self.rows, like.shape[1], self.capacity, like.shape[3])
            self.keys.append(self._torch.zeros(shape, dtype=like.dtype))
            self.values.append(self._torch.zeros(shape, dtype=like.dtype))
        return self.keys[index], self.values[index]

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy one sequence's cache to another row (compaction after a sequence leaves)."""
        for store in itertools.chain(self.keys, self.values):
            store[dst, :, :length] = store[src, :, :length]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in itertools.chain(self.keys, self.values))

    def clear(self) -> None:
        self.keys, self.values, self.rows, self.capacity = [], [], 0, 0


def _cache_classes() -> tuple[type, type]:
    """Cache views for transformers' attention layers, built lazily so importing this module needs no torch."""
    from transformers.cache_utils import Cache

    class PrefillCache(Cache):
        """Writes each prompt into its own row (columns [0, its length)) and attends over the batch's prompts."""

        def __init__(self, store: KVStore, first_row: int, lengths: Sequence[int]) -> None:
            super().__init__(layers=[])
            self._store, self._first, self._lengths = store, first_row, lengths

        def update(self, key: Any, value: Any, layer_idx: int, cache_kwargs: Any = None) -> tuple[Any, Any]:
            keys, values = self._store.layer(layer_idx, key)
            for i, length in enumerate(self._lengths):  # padding columns are never written
                keys[self._first + i, :, :length] = key[i, :, :length]
                values[self._first + i, :, :length] = value[i, :, :length]
            return key, value

    class StepCache(Cache):
        """Writes each row's new token at that row's own position; attends over rows 0..n-1, columns :width."""

        def __init__(self, store: KVStore, positions: Any, width: int) -> None:
            super().__init__(layers=[])
            self._store, self._positions, self._width = store, positions, width
            self._rows = store._torch.arange(positions.shape[0])

        def update(self, key: Any, value: Any, layer_idx: int, cache_kwargs: Any = None) -> tuple[Any, Any]:
            keys, values = self._store.layer(layer_idx, key)
            keys[self._rows, :, self._positions] = key[:, :, 0]
            values[self._rows, :, self._positions] = value[:, :, 0]
            n = key.shape[0]
            return keys[:n, :, : self._width], values[:n, :, : self._width]

    return PrefillCache, StepCache


class TorchDecoder(SlotDecoder):
    """Decodes many sequences of one transformers causal LM, each with a cache row (see the module doc)."""

    def __init__(self, model: Any, max_sequences: int = 16) -> None:
        torch = import_torch()
        params = set(inspect.signature(model.forward).parameters)
        if "position_ids" not in params or "past_key_values" not in params:
            raise ValueError(f"{type(model).__name__} does not take position ids and a cache: it cannot be batch-decoded")
        self._torch = torch
        self.model = model.eval()
        super().__init__(max_sequences, context_length(model.config), eos_ids(model))
        self._keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self._float_mask = model.config._attn_implementation == "eager"  # eager adds the mask to the scores
        self._prefill_cache, self._step_cache = _cache_classes()
        self._store = KVStore(torch)
        self._weights_bytes = module_bytes(model)

    @property
    def memory_bytes(self) -> int:
        return self._weights_bytes + self._store.nbytes

    @classmethod
    def load(
        cls,
        source: ModelSource | Path | str,
        model_config: ModelConfig | None = None,
        threads: int = 0,
        max_sequences: int = 16,
    ) -> TorchDecoder:
        """Load a model folder or .gguf file (a path or a resolved `ModelSource`) in float32.

        GGUF weights, quantized or not, are dequantized by transformers into the float32 model it defines, once:
        later loads read them from the GGUF cache (see `squeezer.gguf_cache`).
        """
        torch = import_torch()
        import transformers

        model_config = model_config or ModelConfig()
        if not isinstance(source, ModelSource):
            source = resolve(str(source))
        torch.set_num_threads(threads or available_cpus())
        kwargs: dict[str, Any] = {"trust_remote_code": model_config.trust_remote_code, "dtype": torch.float32}
        if not source.gguf_file:
            kwargs["use_safetensors"] = not model_config.allow_pickle or None
            return cls(pretrained(transformers.AutoModelForCausalLM, source.path, **kwargs), max_sequences)
        # its config as converted once (transformers would read the whole file again for it)
        kwargs["config"] = gguf_cache.config_and_tokenizer(source, model_config.trust_remote_code)[0]
        cached = gguf_cache.weights_folder(source)
        if cached is not None:
            return cls(pretrained(transformers.AutoModelForCausalLM, cached, use_safetensors=True, **kwargs), max_sequences)
        model = pretrained(transformers.AutoModelForCausalLM, source.path, gguf_file=source.gguf_file, **kwargs)
        gguf_cache.store_weights(source, model)
        return cls(model, max_sequences)

    def prefill_many(self, prompts: Sequence[Sequence[int]], scopes: Sequence[str] | None = None) -> list[tuple[int, np.ndarray]]:
        """Prefill several prompts in one right-padded forward; [(handle, next-token logits)] in their order."""
        torch, lengths = self._torch, [len(p) for p in prompts]
        self._check_prompts(lengths)
        with torch.inference_mode():
            first = len(self._rows)
            self._store.fit(first + len(prompts), max([*lengths, *self._lengths]), self._max_length)
            ids, mask = self._padded(prompts, lengths)
            width = ids.shape[1]
            last = torch.tensor(lengths) - 1
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=torch.arange(width).expand(len(prompts), width),
                cache_position=torch.arange(width),
                past_key_values=self._prefill_cache(self._store, first, lengths),
                use_cache=True,
                **self._keep_last(last),
            )
            logits = self._last_logits(out.logits, last).float().numpy()
        return list(zip(self._admit(lengths), logits))

    def _padded(self, prompts: Sequence[Sequence[int]], lengths: Sequence[int]) -> tuple[Any, Any]:
        """Right-padded ids and their mask: a real token is causal, so it never sees the padding after it."""
        torch, width = self._torch, max(lengths)
        ids = torch.zeros((len(prompts), width), dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, : lengths[i]] = torch.tensor(list(prompt), dtype=torch.long)
            mask[i, : lengths[i]] = 1
        return ids, mask

    def _keep_last(self, last: Any) -> dict[str, Any]:
        """Ask only for the logits at each row's last real token (the lm head over every position is costly)."""
        if not self._keep:
            return {}
        if int(last.min()) == int(last.max()):
            return {"logits_to_keep": 1}
        return {"logits_to_keep": self._torch.unique(last)}

    def _last_logits(self, logits: Any, last: Any) -> Any:
        """[rows, vocab] at each row's last real token, whichever positions the model kept."""
        rows = self._torch.arange(logits.shape[0])
        if logits.shape[1] == 1:
            return logits[:, 0]
        if self._keep:  # kept the unique last positions, sorted: find each row's among them
            return logits[rows, self._torch.searchsorted(self._torch.unique(last), last)]
        return logits[rows, last]

    def step(self, handles: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
        torch, n = self._torch, len(self._rows)
        order, width = self._step_order(handles, tokens)
        with torch.inference_mode():
            self._store.fit(n, width, self._max_length)
            ids = torch.empty(n, dtype=torch.long)
            ids[order] = torch.tensor(list(tokens), dtype=torch.long)
            positions = torch.tensor(self._lengths, dtype=torch.long)
            out = self.model(
                input_ids=ids[:, None],
                attention_mask=self._mask(positions, width),
                position_ids=positions[:, None],
                cache_position=torch.tensor([width - 1]),
                past_key_values=self._step_cache(self._store, positions, width),
                use_cache=True,
                **self._keep,
            )
            logits = out.logits[:, -1].float()
            if order != list(range(n)):
                logits = logits[order]
        self._lengths = [length + 1 for length in self._lengths]
        return logits.numpy()

    def _mask(self, positions: Any, width: int) -> Any:
        """[n, 1, 1, width]: row i sees columns 0..positions[i] (its cache and the token being added).

        When every row has the same length nothing is hidden, and sdpa gets no mask at all, as in generate's
        own decode steps: it then attends with grouped-query heads instead of expanding keys and values.
        """
        if not self._float_mask and min(self._lengths) == max(self._lengths):
            return None
        visible = self._torch.arange(width)[None, :] <= positions[:, None]
        if not self._float_mask:
            return visible[:, None, None, :]
        blocked = self._torch.finfo(self._torch.float32).min
        return self._torch.zeros(visible.shape).masked_fill(~visible, blocked)[:, None, None, :]

    def _move_row(self, src: int, dst: int, length: int) -> None:
        with self._torch.inference_mode():
            self._store.move(src, dst, length)

    def _clear_cache(self) -> None:
        self._store.clear()

    def close(self) -> None:
        self._store.clear()
        self._rows, self._lengths = [], []
        self.model = None
