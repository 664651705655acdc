"""Screening: which passed candidates stay loaded for the final, interleaved timing.

Every candidate that passes the gate used to stay loaded until the end, so that all could be timed together; with
the default sweep that is about eleven runtimes' copies of the model at once (measured since: the final timing
was not the peak, the builds beside the loaded candidates were, and screening took 9% off BERT-base's peak,
BENCHMARKS.md). Now each is timed once as it passes (one round, the profile's workloads) and
only the finalists stay loaded: the fastest few, and each runtime's fastest (so the report, and the bench's
runner-up rung, still compare runtimes on the final clock). The others are freed at once, their first timing and
its speed-up over the reference's first timing kept in the report with the verdict "screened" (not in the
"vs torch" column: a lone first timing is not measured like the interleaved rounds, so the two do not compare).

A first timing is noisier than the interleaved rounds, which is why several finalists go on rather than one: a
candidate screened out was behind every finalist in a single round, and the choice among close ones is still made
by the interleaved rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from squeezer import heap
from squeezer.backends.base import Backend
from squeezer.compiler import timing
from squeezer.compiler.pipeline import Progress


@dataclass
class Held:
    """A passed candidate kept loaded: its first timing's score, its report record and its backend."""

    score: float
    record: dict[str, Any]
    backend: Backend


class Finalists:
    """The passed candidates kept loaded, at most `keep` plus each runtime's fastest (`keep` 0: every one)."""

    def __init__(self, keep: int, reference: Backend, loads: list[timing.Workload], profile: str, say: Progress) -> None:
        """Times the PyTorch `reference` once the same way, so a screened candidate's speed-up is measured alike."""
        self._keep, self._loads, self._profile, self._say = keep, loads, profile, say
        self._held: dict[str, Held] = {}
        self._reference = self._first_timing("torch", reference).score if keep else 0.0

    def _first_timing(self, name: str, backend: Backend) -> timing.Timing:
        return timing.measure({name: backend}, self._loads, self._profile, rounds=1, warmup=1)[name]

    def add(self, record: dict[str, Any], backend: Backend) -> None:
        """Hold a candidate that passed the gate; free whichever candidate has fallen out of the finalists."""
        if not self._keep:
            self._held[record["name"]] = Held(0.0, record, backend)
            return
        first = self._first_timing(record["name"], backend)
        record["screen"] = first.as_json()
        self._held[record["name"]] = Held(first.score, record, backend)
        for name in set(self._held) - self._finalists():
            self._drop(name)

    def _finalists(self) -> set[str]:
        ranked = sorted(self._held, key=lambda name: self._held[name].score)
        fastest_per_runtime = {}
        for name in reversed(ranked):  # the fastest of each runtime is written last
            fastest_per_runtime[self._held[name].record["runtime"]] = name
        return set(ranked[: self._keep]) | set(fastest_per_runtime.values())

    def _drop(self, name: str) -> None:
        held = self._held.pop(name)
        speedup = round(self._reference / max(held.score, 1e-9), 2)  # first timing against first timing
        held.record.update(verdict="screened", screen_speedup=speedup)
        held.record["reasons"] = [f"passed the gate; slower in a first timing ({speedup:.2f}x the reference's first "
                                  f"timing) than the {self._keep} fastest and each runtime's fastest, which went on to "
                                  "the final, interleaved timing"]
        held.backend.close()
        heap.trim()  # hand its memory back now, not after the next candidate's gate
        self._say(f"{name}: screened out ({speedup:.2f}x in a first timing); freed")

    @property
    def backends(self) -> dict[str, Backend]:
        """The finalists by name, for the final timing."""
        return {name: held.backend for name, held in self._held.items()}

    def close(self) -> None:
        for held in self._held.values():
            held.backend.close()
        self._held.clear()
