"""`serve --optimize`: the compiler's step above the loader, handed to the engine by the CLI.

Serving code never imports the compiler: `squeezer serve --optimize` passes `optimizer(model_config)` to the
engine as its `prepare` step, which the registry runs in the loading thread before a model loads (or, for the
background compile, on a thread of its own while the model serves). The compile itself runs in a child process
(`squeezer.compiler.isolated`): its memory goes back to the system when it ends, and if it dies the server does not.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from squeezer.compiler.cache import default_dir
from squeezer.compiler.config import OptimizeConfig
from squeezer.compiler.isolated import run_isolated
from squeezer.config import ModelConfig
from squeezer.sources import ModelSource

log = logging.getLogger(__name__)

# A compile uses every core and about 7 times the model's weights (background.COMPILE_MEMORY_FACTOR): --optimize's
# compiles take turns (a loading model waits for its own compile, not for another model's load).
ONE_COMPILE = threading.Lock()


def optimized_source(source: ModelSource, model_config: ModelConfig) -> ModelSource:
    """The model's artifact, built by the compiler or taken from its cache.

    A causal LM the decoder graph cannot express keeps serving on the torch reference (with a warning that
    says why), since generation works there; any other failure fails the model's load.
    """
    config = OptimizeConfig(task=model_config.task, profile=model_config.optimize_profile,
                            allow_pickle=model_config.allow_pickle, trust_remote_code=model_config.trust_remote_code)
    name = str(source.path / source.gguf_file) if source.gguf_file else str(source.path)
    key = f"{name}\0{config.profile}"  # one served artifact per source and profile
    out = default_dir() / "served" / hashlib.sha256(key.encode()).hexdigest()[:16]
    with ONE_COMPILE:
        built, unsupported = run_isolated(compile_into, source, out, config)
    if unsupported:
        log.warning("%s; serving it on the float32 torch reference instead", unsupported)
        return source
    return ModelSource(source.model_id, built, artifact=True)


def compile_into(source: ModelSource, out: Path, config: OptimizeConfig) -> tuple[Path, str | None]:
    """The compile, as the child process runs it: the artifact's folder, or why the decoder graph cannot express
    the model (then the model serves on the torch reference; every other failure is raised)."""
    from squeezer.compiler.optimize import optimize
    from squeezer.compiler.optimize_decoder import UnsupportedModelError

    try:
        return Path(optimize(source, out, config).path), None
    except UnsupportedModelError as exc:
        return out, str(exc)


def optimizer(model_config: ModelConfig) -> Callable[[ModelSource], ModelSource]:
    """The engine's `prepare` step for `--optimize`: each source compiled with these settings."""
    return functools.partial(optimized_source, model_config=model_config)
