"""Time candidates for a profile, on this machine, the way serving runs them.

Latency: one sequence at a time, a short one and a long one. Throughput: realistic batches, as the
batcher forms them (several sequences of mixed lengths, padded to the longest). Every backend is warmed
up, then the backends are timed in interleaved rounds, so that load from elsewhere on the machine
slows all candidates alike instead of whichever happened to run at that moment. The time kept for each
workload is the best over all rounds: other processes on the machine only ever add time, so the minimum
is the statistic that ranks candidates the same way from one run to the next (as `timeit` advises).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from squeezer.backends.base import Backend, Batch

SHORT_TOKENS = 16
LONG_TOKENS = 128
SETTLE_S = 0.02  # lets the previous backend's spinning threads go to sleep
THROUGHPUT_BATCHES = ((16, 32), (16, 64), (8, 128))  # (sequences, tokens): what a busy batcher forms
TEXT = (
    "Optimized inference keeps the same answers while it spends less time on each request, because the graph "
    "is fused, quantized where the accuracy allows, and measured on the machine that will serve it. "
)


@dataclass(frozen=True)
class Workload:
    """A named batch to time; `sequences` counts what it serves, for throughput."""

    name: str
    batch: Batch

    @property
    def sequences(self) -> int:
        return self.batch.size


def token_ids(tokenizer: Any, length: int) -> list[int]:
    """Real token ids of a natural text, cut or repeated to `length`, framed by the special tokens."""
    body = tokenizer(TEXT, add_special_tokens=False)["input_ids"]  # repeated below, never over the limit
    body = (body * math.ceil(length / max(len(body), 1)))[: max(length - 2, 1)]
    return tokenizer.build_inputs_with_special_tokens(body)[:length]


def workloads(profile: str, tokenizer: Any, max_length: int, needs_types: bool) -> list[Workload]:
    """The batches a profile is judged on, capped at the model's maximum length."""
    pad_id = tokenizer.pad_token_id or 0

    def batch(sequences: int, tokens: int) -> Batch:
        rows = [token_ids(tokenizer, max(2, min(tokens, max_length) - (i % 4))) for i in range(sequences)]
        types = [[0] * len(r) for r in rows] if needs_types else None
        return Batch.pad(rows, types, pad_id)

    if profile == "latency":
        return [Workload("short", batch(1, SHORT_TOKENS)), Workload("long", batch(1, LONG_TOKENS))]
    return [Workload(f"b{n}x{t}", batch(n, t)) for n, t in THROUGHPUT_BATCHES]


@dataclass(frozen=True)
class Timing:
    """Best milliseconds per workload over the timed rounds, and the profile's score (lower is better)."""

    best_ms: dict[str, float]
    score: float
    unit: str

    def as_json(self) -> dict[str, Any]:
        return {**{f"{k}_ms": round(v, 3) for k, v in self.best_ms.items()}, "score": round(self.score, 4), "unit": self.unit}


def score(profile: str, times: dict[str, float], loads: list[Workload]) -> tuple[float, str]:
    """Latency: geometric mean of the short and long times (ms). Throughput: ms per sequence."""
    if profile == "latency":
        return math.exp(statistics.fmean(math.log(max(v, 1e-6)) for v in times.values())), "ms"
    total = sum(w.sequences for w in loads)
    return sum(times.values()) / total, "ms/sequence"


def measure(backends: dict[str, Backend], loads: list[Workload], profile: str, rounds: int, warmup: int = 2,
            block: int = 3, progress: Callable[[str], None] = lambda _: None) -> dict[str, Timing]:
    """Warm every backend up, then time them in rounds: each round runs each backend on each workload
    `block` times in a row (after a pause, and one untimed run); the best run over all rounds is kept.

    The pause matters: ONNX Runtime and OpenMP threads spin for a while after a run, and a backend timed
    right after another would pay for its neighbour's spinning threads.
    """
    for backend in backends.values():
        for _ in range(warmup):
            for load in loads:
                backend.forward(load.batch)
    samples: dict[str, dict[str, list[float]]] = {name: {w.name: [] for w in loads} for name in backends}
    for r in range(rounds):
        progress(f"timing round {r + 1}/{rounds}")
        for name, backend in backends.items():
            for load in loads:
                time.sleep(SETTLE_S)
                backend.forward(load.batch)
                runs = []
                for _ in range(block):
                    start = time.perf_counter()
                    backend.forward(load.batch)
                    runs.append((time.perf_counter() - start) * 1000)
                samples[name][load.name].append(min(runs))  # interference only ever adds time
    timings = {}
    for name, per_load in samples.items():
        best = {load: min(values) for load, values in per_load.items()}
        value, unit = score(profile, best, loads)
        timings[name] = Timing(best, value, unit)
    return timings
