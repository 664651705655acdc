"""Selection: which recipes this machine tries, and among the candidates that passed the gate, the fastest for
the profile wins."""

from __future__ import annotations

from typing import Any

from squeezer.compiler.pipeline import Progress
from squeezer.compiler.recipes import Recipe


def skipped(recipe: Recipe, reason: str) -> dict[str, Any]:
    """The report record of a recipe this machine does not try (never built, gated or timed)."""
    return {"name": recipe.name, "runtime": recipe.runtime, "dtype": recipe.dtype, "recipe": recipe.describe(),
            "verdict": "skipped", "reasons": [reason], "metrics": {}, "timings": {}}


Planned = list[tuple[int, Recipe, Progress]]  # (position in the sweep, recipe, its progress line) of each to build


def plan(recipes: list[Recipe], flags: list[str], say: Progress) -> tuple[list[dict[str, Any]], Planned]:
    """The report's records in sweep order (a skipped recipe's filled now, with the reason; the others' empty
    until gated) and the recipes to build; a recipe needing CPU features this machine lacks is never built."""
    candidates: list[dict[str, Any]] = []
    runnable: Planned = []
    for i, recipe in enumerate(recipes):
        missing = recipe.missing_features(flags)
        if missing:
            say(f"[{i + 1}/{len(recipes)}] {recipe.name}: skipped, {missing}")
            candidates.append(skipped(recipe, missing))
        else:
            candidates.append({})
            runnable.append((i, recipe, lambda msg, name=recipe.name, n=i: say(f"[{n + 1}/{len(recipes)}] {name}: {msg}")))
    return candidates, runnable


class NoCandidateError(RuntimeError):
    """Every candidate failed or was rejected; the message lists why."""


def choose(candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """Mark and return the passed candidate with the best (lowest) timing score.

    Ties keep table order, which lists simpler recipes first, so an equally fast fp32 graph beats int8.
    """
    passed = [c for c in candidates if c["verdict"] == "passed" and c.get("timings")]
    if not passed:
        lines = "; ".join(f"{c['name']}: {c['verdict']} ({', '.join(c['reasons'])})" for c in candidates)
        raise NoCandidateError(f"no candidate passed the accuracy gate: {lines}")
    best = min(passed, key=lambda c: c["timings"]["score"])
    best["verdict"] = "chosen"
    return best


def speedups(candidates: list[dict[str, Any]], reference_score: float) -> None:
    """Each timed candidate's speed relative to the PyTorch reference (2.0 = twice as fast)."""
    for c in candidates:
        if c.get("timings"):
            c["speedup"] = round(reference_score / max(c["timings"]["score"], 1e-9), 2)


def record_timings(candidates: list[dict[str, Any]], results: dict[str, Any], reference_score: float) -> dict[str, Any]:
    """Store each timed candidate's timings (`results` by name, the PyTorch reference under "torch") and
    speedup in its report record; returns the reference's timings. Shared by every model family."""
    by_name = {c["name"]: c for c in candidates}
    for name, result in results.items():
        if name in by_name:
            by_name[name]["timings"] = result.as_json()
    speedups(candidates, reference_score)
    return dict(results["torch"].as_json())
