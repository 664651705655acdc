"""The benchmark workload: sentences of 8 to 48 words (about 31 tokens for MiniLM), deterministic."""

from __future__ import annotations

import random

WORDS = (
    "the model serves requests quickly while batching many sentences together for throughput and latency "
    "engineers deploy transformers on cpus with onnx runtime quantization graph fusion and careful padding "
    "every answer must match the reference within a small tolerance so users can trust the faster server "
    "Paris Berlin Tokyo numbers like 42 and 3.14 appear too, along with punctuation; questions? yes!"
).split()


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 48))) + f" ({i})" for i in range(count)]
