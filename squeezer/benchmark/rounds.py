"""Rounds: each figure measured several times, interleaved across rungs, and reported as its median with the
smallest and largest round beside it.

These machines drift by 15% within minutes (turbo, neighbours, thermal state), so a rung measured in one stretch
and the next rung in a later one would show the drift as a difference between them. Rounds go rung A, B, C, A,
B, C, ...: every rung sees each stretch once, the speed-ups are taken round by round (A's round i against B's
round i, measured moments apart), and the spread of the rounds shows how far a figure can be trusted.
"""

from __future__ import annotations

import statistics
from typing import Any

TOTALS = frozenset({"errors"})  # summed over the rounds: one failed request in any round is one too many


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure from its rounds: every number's median (a total for TOTALS), "min" and "max" with each
    number's extremes, the rest (the generator's name) from the first round, and "rounds" kept whole."""
    numbers = [k for k in rounds[0] if k not in TOTALS and any(_number(r.get(k)) for r in rounds)]
    values = {k: [r[k] for r in rounds if _number(r.get(k))] for k in numbers}
    found: dict[str, Any] = {}
    for key, first in rounds[0].items():  # in the rounds' own order
        if key in TOTALS:
            found[key] = sum(r.get(key) or 0 for r in rounds)
        else:
            found[key] = statistics.median(values[key]) if key in values else first
    found["min"] = {k: min(v) for k, v in values.items()}
    found["max"] = {k: max(v) for k, v in values.items()}
    found["rounds"] = rounds
    return found


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def paired(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], key: str) -> list[float | None]:
    """Round i's `key` over the other rung's round i: ratios of figures measured moments apart."""
    return [a[key] / b[key] if b.get(key) and a.get(key) is not None else None for a, b in zip(ours, theirs)]
