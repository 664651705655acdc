"""Build small artifacts for tests: tiny models, few recipes, few timing rounds, no shared cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from squeezer.compiler.config import OptimizeConfig
from squeezer.compiler.optimize import optimize
from squeezer.compiler.report import Report
from squeezer.sources import ModelSource

# The tiny models' heads (squeezer/testing/tiny_encoders.py) and the task each is optimized for.
TASK_OF_HEAD = {
    "base": "feature-extraction",
    "sequence-classification": "text-classification",
    "token-classification": "token-classification",
    "masked-lm": "fill-mask",
    "question-answering": "question-answering",
    "zero-shot": "zero-shot-classification",
}
QUICK_RECIPES = "fp32,fp32-fused,int8-dyn-u8-pc"


def has_cuda() -> bool:
    """Whether GPU tests can run: an NVIDIA GPU and onnxruntime's CUDA provider."""
    import onnxruntime as ort

    from squeezer.hardware import gpus

    return "CUDAExecutionProvider" in ort.get_available_providers() and bool(gpus())


def build_artifact(folder: Path, out: Path, head: str, **settings: Any) -> Report:
    """Optimize a tiny model folder into `out` quickly; `settings` override OptimizeConfig fields."""
    values: dict[str, Any] = {"task": TASK_OF_HEAD[head], "cache": False, "timing_rounds": 3, "recipes": QUICK_RECIPES}
    values.update(settings)
    return optimize(ModelSource(folder.name, folder), out, OptimizeConfig(**values), progress=lambda _: None)
