"""The narrow contract between the scheduler and whatever executes the model.

A backend sees only whole, padded batches of token ids and returns raw head outputs as numpy arrays.
All task logic (pooling, softmax, spans) lives in `squeezer.tasks`, so every backend gives the same answers
for the same logits, and swapping the torch reference for a compiled artifact touches no task or route.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from squeezer.hardware import available_cpus

if TYPE_CHECKING:
    from squeezer.artifact import Artifact
    from squeezer.config import BackendConfig

# What each model head returns, and whether the output has one row per token (so the scheduler can cut
# each sequence's rows out of a padded batch). Tasks name a head; backends load the matching model class.
HEAD_OUTPUTS: dict[str, dict[str, bool]] = {
    "base": {"last_hidden_state": True},
    "sequence-classification": {"logits": False},
    "token-classification": {"logits": True},
    "masked-lm": {"logits": True},
    "question-answering": {"start_logits": True, "end_logits": True},
}


@dataclass(frozen=True)
class Batch:
    """A right-padded batch of sequences, ready for one forward pass."""

    input_ids: np.ndarray  # int64 [batch, length]
    attention_mask: np.ndarray  # int64 [batch, length]
    token_type_ids: np.ndarray | None  # int64 [batch, length], for models that take segment ids
    alone: bool = False  # no other batch runs or waits: a backend with instances may run it on every core

    @classmethod
    def pad(
        cls, sequences: Sequence[Sequence[int]], type_ids: Sequence[Sequence[int]] | None, pad_id: int,
        alone: bool = False,
    ) -> Batch:
        """Pad sequences to the longest one; padding is masked, so it does not change any real row."""
        width = max(len(s) for s in sequences)
        ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(sequences), width), dtype=np.int64)
        types = np.zeros((len(sequences), width), dtype=np.int64) if type_ids is not None else None
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
            if types is not None and type_ids is not None:
                types[row, : len(seq)] = type_ids[row]
        return cls(ids, mask, types, alone)

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def lengths(self) -> list[int]:
        return [int(n) for n in self.attention_mask.sum(axis=1)]


@dataclass(frozen=True)
class Capabilities:
    """What a loaded backend is and can do, for /info and for the scheduler's limits."""

    name: str
    device: str
    dtype: str
    head: str
    max_length: int
    instances: int = 1  # batches the backend may run at once, from as many threads
    memory_bytes: int = 0  # the weights it holds in memory (0: it cannot tell), for the server's memory budget


class Backend(Protocol):
    """A loaded model that runs padded batches. Construction loads; see `squeezer.backends.BACKENDS`."""

    def warmup(self) -> None:
        """Run a small batch so the first real request does not pay for lazy initialisation."""

    def forward(self, batch: Batch) -> dict[str, np.ndarray]:
        """Run one batch; return the head's outputs (see HEAD_OUTPUTS) as float32 arrays."""

    def capabilities(self) -> Capabilities:
        """Describe this backend for /info and the scheduler."""

    def close(self) -> None:
        """Release the model's memory."""


def split_outputs(head: str, outputs: dict[str, np.ndarray], lengths: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Cut a batch's outputs into one dict per sequence, dropping padded token rows."""
    per_token = HEAD_OUTPUTS[head]
    rows: list[dict[str, np.ndarray]] = []
    for i, length in enumerate(lengths):
        rows.append({name: (arr[i, :length] if per_token[name] else arr[i]) for name, arr in outputs.items()})
    return rows


def instances_for(config: BackendConfig, artifact: Artifact) -> int:
    """How many batches run at once: `--instances`, else one per core on a CPU (one on CUDA, where one run
    fills the device).

    Under load, one single-threaded run per core beats one run split across the cores: a run on two
    threads waits at every op for the slower thread, and the server's own thread (parsing, tokenizing,
    answering) keeps preempting one of them. Measured on 2 cores with MiniLM, two workers taking length-sorted
    batches of 1 / 4 / 8 sentences in a loop: ONNX Runtime int8 252 / 281 / 276 sentences/s from two
    single-threaded runs against 197 / 257 / 240 from one run on both threads; OpenVINO bf16 306 / 388 / 408
    against 280 / 350 / 382. One request alone, though, finishes sooner on all the cores, so the CPU backends
    run a batch the batcher marks `alone` (none other running or waiting) on every core instead. Only such a
    batch: a long one run on every core while the next started beside it on a stream would put three threads on
    two cores for its whole length (embed-batch, 4 clients: 56 against 65 passages/s when any batch that found
    none running went wide). ONNX Runtime runs instances as runs of one session, OpenVINO as streams of one
    compiled model.
    """
    if config.instances:
        return config.instances
    return (config.threads or available_cpus()) if artifact.target == "cpu" else 1


class Alone:
    """Counts a backend's forwards in flight, so that a batch marked `alone` runs on every core only when no other
    forward runs: the runner on every core serves one batch at a time, whoever marked the batch."""

    def __init__(self) -> None:
        self._running = 0
        self._lock = threading.Lock()

    @contextmanager
    def entering(self) -> Iterator[bool]:
        """Hold a place among the running forwards; yields whether none was running."""
        with self._lock:
            alone = self._running == 0
            self._running += 1
        try:
            yield alone
        finally:
            with self._lock:
                self._running -= 1
