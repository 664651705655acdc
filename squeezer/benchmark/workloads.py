"""The benchmark's workloads, as data: what one request carries, drawn from a fixed seed.

embed-short: one sentence of 8 to 48 words (about 31 MiniLM tokens); embed-batch: 32 passages of 64 to 256 words.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

WORDS = (
    "the model serves requests quickly while batching many sentences together for throughput and latency "
    "engineers deploy transformers on cpus with onnx runtime quantization graph fusion and careful padding "
    "every answer must match the reference within a small tolerance so users can trust the faster server "
    "Paris Berlin Tokyo numbers like 42 and 3.14 appear too, along with punctuation; questions? yes!"
).split()


def sentences(count: int, seed: int = 0, low: int = 8, high: int = 48) -> list[str]:
    """`count` texts of `low` to `high` words, numbered so no two are equal (no cache can answer them)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))) + f" ({i})" for i in range(count)]


@dataclass(frozen=True)
class Workload:
    """A kind of request: its route (the Inference API's), the items one request carries, and how many."""

    name: str
    description: str
    per_request: int  # texts in one request (1: a bare string)
    low: int  # words per text
    high: int

    def bodies(self, count: int, seed: int = 0) -> list[dict[str, Any]]:
        texts = sentences(count * self.per_request, seed, self.low, self.high)
        chunks = [texts[i * self.per_request:(i + 1) * self.per_request] for i in range(count)]
        return [{"inputs": chunk[0] if self.per_request == 1 else chunk, "options": {"use_cache": False}} for chunk in chunks]


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("embed-short", "one sentence of 8 to 48 words", 1, 8, 48),
    Workload("embed-batch", "32 passages of 64 to 256 words", 32, 64, 256),
)}
