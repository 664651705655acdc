"""Time decoders for a profile, on this machine, the way the decode loop drives them.

Latency: one request decoding alone after a short prompt (what a single chat user waits on, per token).
Throughput: eight sequences stepping together, the batch continuous batching keeps dense under load; the
score is the time per generated token over all of them. Each run prefills the prompts in one call (its time
is reported as the time to first token), then times the steps; the step time kept is the run's mean. As in
`squeezer.compiler.timing`, decoders are warmed up, then timed in interleaved rounds after a pause, and the
best round counts: other load on the machine only ever adds time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from squeezer.backends.decoder import Decoder
from squeezer.compiler.timing import SETTLE_S, TEXT, Timing

PROMPT_TOKENS = 16
STEPS = 16  # decode steps timed per run


@dataclass(frozen=True)
class DecodeWorkload:
    """`sequences` prompts of `PROMPT_TOKENS` prefilled together, then `STEPS` steps of all of them."""

    name: str
    sequences: int


PROFILES: dict[str, DecodeWorkload] = {
    "latency": DecodeWorkload("decode1", 1),
    "throughput": DecodeWorkload("decode8", 8),
}


def text_ids(tokenizer: Any, length: int) -> list[int]:
    """Token ids of a natural text, repeated or cut to `length` (prompt and fed tokens alike)."""
    body = tokenizer(TEXT, add_special_tokens=False)["input_ids"] or [0]
    return (body * (length // len(body) + 1))[:length]


@dataclass(frozen=True)
class DecodeTiming:
    """Best prefill and per-step milliseconds, and the profile's score: milliseconds per generated token."""

    prefill_ms: float
    step_ms: float
    sequences: int

    @property
    def ms_per_token(self) -> float:
        return self.step_ms / self.sequences

    def as_json(self) -> dict[str, Any]:
        timing = Timing({"prefill": self.prefill_ms, "step": self.step_ms}, self.ms_per_token, "ms/token")
        return {**timing.as_json(), "tokens_per_s": round(1000.0 / max(self.ms_per_token, 1e-9), 1)}


def run_once(decoder: Decoder, load: DecodeWorkload, ids: list[int]) -> tuple[float, float]:
    """(prefill ms, mean step ms) of one run; every cache is released afterwards."""
    prompt = ids[:PROMPT_TOKENS]
    start = time.perf_counter()
    results = decoder.prefill_many([prompt] * load.sequences)
    prefill = (time.perf_counter() - start) * 1000
    handles = [handle for handle, _ in results]
    try:
        start = time.perf_counter()
        for k in range(STEPS):
            decoder.step(handles, [ids[PROMPT_TOKENS + k]] * len(handles))
        steps = (time.perf_counter() - start) * 1000 / STEPS
    finally:
        for handle in handles:
            decoder.release(handle)
    return prefill, steps


def measure(decoders: dict[str, Decoder], tokenizer: Any, profile: str, rounds: int, warmup: int = 1,
            progress: Callable[[str], None] = lambda _: None) -> dict[str, DecodeTiming]:
    """Each decoder's best timing on the profile's workload: all warmed up, then timed in interleaved rounds."""
    load = PROFILES[profile]
    ids = text_ids(tokenizer, PROMPT_TOKENS + STEPS)
    for decoder in decoders.values():
        for _ in range(warmup):
            run_once(decoder, load, ids)
    best = {name: (float("inf"), float("inf")) for name in decoders}
    for r in range(rounds):
        progress(f"timing round {r + 1}/{rounds}")
        for name, decoder in decoders.items():
            time.sleep(SETTLE_S)
            prefill, step = run_once(decoder, load, ids)
            best[name] = (min(best[name][0], prefill), min(best[name][1], step))
    return {name: DecodeTiming(prefill, step, load.sequences) for name, (prefill, step) in best.items()}
