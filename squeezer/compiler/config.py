"""`OptimizeConfig`: every knob of `squeezer optimize`, in one frozen dataclass.

Its fields also generate the command's flags and environment variables (see `squeezer.compiler.cli`), the
same way the server's configs do, so the Python API and the CLI cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from squeezer.compiler import recipes
from squeezer.config import PROFILES, _check, setting

TARGETS = ("auto", "cpu", "cuda")
SWEEPS = ("default", "full")


@dataclass(frozen=True)
class OptimizeConfig:
    """What to optimize for, how much accuracy may be traded for speed, and how candidates are measured."""

    task: str | None = setting(None, "Task to optimize for; detected from the model folder when omitted.")
    target: str = setting(
        "auto", "Hardware to optimize for; auto picks cuda when a GPU and onnxruntime-gpu are present.", choices=TARGETS
    )
    profile: str = setting(
        "latency", "What to make fast: latency (one input, short and long) or throughput (realistic batches).",
        choices=PROFILES,
    )
    max_accuracy_loss: float | None = setting(
        None,
        "Accuracy budget: the largest loss allowed on the task's main metric (1 - minimum cosine for embeddings, "
        "1 - label agreement for classification, ...); the default depends on the task.",
    )
    validation_data: str | None = setting(
        None, "File of validation inputs, one text or JSON input per line; default: a built-in set for the task."
    )
    sweep: str = setting(
        "default", "Candidates to try: default (the few that usually win) or full (every recipe).", choices=SWEEPS
    )
    recipes: str | None = setting(
        None, "Comma-separated recipe names to try instead of the sweep (listed by `squeezer optimize --help`)."
    )
    threads: int = setting(0, "Threads for measuring and serving; 0 means the cores available to this process.")
    timing_rounds: int = setting(12, "Timed rounds per candidate after warm-up; the best round counts (noise only adds time).")
    finalists: int = setting(
        3, "Passed candidates kept loaded for the final interleaved timing, besides each runtime's fastest; the others "
        "are freed after a first timing (less memory while compiling). 0 keeps every one.",
    )
    cache_dir: str | None = setting(None, "Where finished optimizations are cached; default ~/.cache/squeezer/optimize.")
    cache: bool = setting(True, "Read finished optimizations from the cache and store new ones; --no-cache does neither.")
    trust_remote_code: bool = setting(False, "Run model code shipped with the model; only for sources you trust.")
    allow_pickle: bool = setting(False, "Allow loading pickle weights (.bin); only for sources you trust.")

    def recipe_names(self) -> list[str] | None:
        """The recipes named by `recipes`, in order, or None to use the sweep."""
        return [n.strip() for n in self.recipes.split(",") if n.strip()] if self.recipes else None

    def unknown_recipes(self) -> list[str]:
        known = {r.name for r in recipes.all_recipes()}
        return [n for n in self.recipe_names() or [] if n not in known]

    def __post_init__(self) -> None:
        from squeezer.tasks import GENERATION_TASKS, TASKS

        tasks = (*TASKS, *GENERATION_TASKS)  # what the compiler can optimize
        _check(self.task is None or self.task in tasks, "task",
               f"unknown task {self.task!r}; choose one of {', '.join(sorted(tasks))}")
        _check(self.target in TARGETS, "target", f"must be one of {', '.join(TARGETS)}, got {self.target!r}")
        _check(self.profile in PROFILES, "profile", f"must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        _check(self.sweep in SWEEPS, "sweep", f"must be one of {', '.join(SWEEPS)}, got {self.sweep!r}")
        _check(not self.unknown_recipes(), "recipes", f"unknown recipes {', '.join(self.unknown_recipes())}; "
               f"known: {', '.join(r.name for r in recipes.all_recipes())}")
        _check(self.finalists >= 0, "finalists", f"must be 0 (keep every one) or more, got {self.finalists}")
        _check(
            self.max_accuracy_loss is None or 0 < self.max_accuracy_loss < 1,
            "max_accuracy_loss",
            f"must be between 0 and 1 (0.01 allows 1% loss), got {self.max_accuracy_loss}",
        )
        _check(
            self.validation_data is None or Path(self.validation_data).is_file(),
            "validation_data",
            f"{self.validation_data} is not a file",
        )
        _check(self.threads >= 0, "threads", f"must be 0 (auto) or a positive count, got {self.threads}")
        _check(self.timing_rounds >= 3, "timing_rounds",
               f"must be at least 3 for a meaningful measurement, got {self.timing_rounds}")
