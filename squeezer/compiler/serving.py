"""`serve --optimize`: the compiler's step above the loader, handed to the engine by the CLI.

Serving code never imports the compiler: `squeezer serve --optimize` passes `optimizer(model_config)` to the
engine as its `prepare` step, which the registry runs in the loading thread before a model loads.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from squeezer.compiler.cache import default_dir
from squeezer.compiler.config import OptimizeConfig
from squeezer.config import ModelConfig
from squeezer.sources import ModelSource

log = logging.getLogger(__name__)


def optimized_source(source: ModelSource, model_config: ModelConfig) -> ModelSource:
    """The model's artifact, built by the compiler or taken from its cache.

    A causal LM the decoder graph cannot express keeps serving on the torch reference (with a warning that
    says why), since generation works there; any other failure fails the model's load.
    """
    from squeezer.compiler.optimize import optimize
    from squeezer.compiler.optimize_decoder import UnsupportedModelError

    config = OptimizeConfig(task=model_config.task, profile=model_config.optimize_profile,
                            allow_pickle=model_config.allow_pickle, trust_remote_code=model_config.trust_remote_code)
    name = str(source.path / source.gguf_file) if source.gguf_file else str(source.path)
    key = f"{name}\0{config.profile}"  # one served artifact per source and profile
    out = default_dir() / "served" / hashlib.sha256(key.encode()).hexdigest()[:16]
    try:
        report = optimize(source, out, config)
    except UnsupportedModelError as exc:
        log.warning("%s; serving it on the float32 torch reference instead", exc)
        return source
    return ModelSource(source.model_id, Path(report.path), artifact=True)


def optimizer(model_config: ModelConfig) -> Callable[[ModelSource], ModelSource]:
    """The engine's `prepare` step for `--optimize`: each source compiled with these settings."""
    return functools.partial(optimized_source, model_config=model_config)
