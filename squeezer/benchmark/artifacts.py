"""The compiled artifacts the bench serves and measures: what `optimize` chooses here, the plain fp32 graph, and
the runner-up on another runtime, each built by `squeezer optimize` run as a command. The benchmark, like serving,
never imports the compiler; its cache answers a repeated build at once, and each build is made once per run.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

from squeezer.artifact import read_report

# One candidate has nothing to be chosen against: its timing only fills its report, so the fewest rounds will do.
SINGLE_RECIPE_ROUNDS = "3"


class Unavailable(RuntimeError):
    """Why an artifact cannot be had on this machine; a rung that needs it is reported skipped with this reason."""


@functools.cache
def build(spec: str, logs: Path, recipes: str | None = None, profile: str = "latency") -> str:
    """The folder of the artifact `squeezer optimize` writes for `spec`: the one it chooses among its sweep for
    `profile`, or, with `recipes` (comma-separated names), among those only."""
    name = recipes or f"chosen-{profile}"
    out, log = logs / f"artifact-{name}", logs / f"optimize-{name}.log"
    cmd = [sys.executable, "-m", "squeezer.cli", "optimize", spec, "--out", str(out), "--quiet", "--profile", profile]
    if recipes:
        cmd += ["--recipes", recipes, "--timing-rounds", SINGLE_RECIPE_ROUNDS]
    with log.open("w") as sink:
        done = subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        said = [line for line in log.read_text().splitlines() if line.strip()]
        raise Unavailable(f"`squeezer optimize{' --recipes ' + recipes if recipes else ''}` failed: "
                          f"{said[-1] if said else f'exit status {done.returncode}'}")
    return str(out)


def chosen_artifact(spec: str, logs: Path) -> str | None:
    """The artifact `optimize` chooses for `spec` on this machine, or None where it cannot build one."""
    try:
        return build(spec, logs)
    except Unavailable:
        return None


def runner_up(artifact: str) -> dict[str, Any]:
    """The fastest candidate in `artifact`'s report that passed the gate on another runtime than the chosen one's:
    what this machine would serve were the winner's runtime missing."""
    candidates = read_report(artifact).get("candidates", [])
    chosen = next((c for c in candidates if c["verdict"] == "chosen"), None)
    if chosen is None:
        raise Unavailable("the chosen artifact's report names no chosen candidate")
    runtime = chosen.get("runtime", "onnxruntime")
    others = [c for c in candidates if c["verdict"] == "passed" and c.get("runtime", "onnxruntime") != runtime
              and c.get("speedup")]
    if not others:
        raise Unavailable(f"no candidate on another runtime than {runtime} (the chosen {chosen['name']}'s) passed the "
                          "gate here")
    return max(others, key=lambda c: c["speedup"])
