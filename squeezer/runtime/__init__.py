"""The runtime table: one row per kind of model (encoder, causal LM, encoder-decoder), chosen by task.

Adding a kind is one module with a runtime class, its `capabilities_for` and its `load`, plus one row here.
`load_runtime` is the one way a model source becomes something that serves (see `runtime/base.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from squeezer.caches import LRUCache
from squeezer.config import ModelConfig, ServeConfig
from squeezer.loading import LOAD_LOCK, check_weights, load_info
from squeezer.runtime import causal_lm, encoder, seq2seq
from squeezer.runtime.base import (
    Generating,
    Hooks,
    Inferring,
    Runtime,
    RuntimeKind,
    RuntimeStats,
    Vocabulary,
)
from squeezer.sources import ModelSource
from squeezer.tasks import GENERATION_TASKS, SEQ2SEQ_TASKS, TASKS

RUNTIMES: tuple[RuntimeKind, ...] = (
    RuntimeKind(causal_lm.CausalLMRuntime.kind, GENERATION_TASKS, causal_lm.capabilities_for, causal_lm.load),
    RuntimeKind(seq2seq.Seq2SeqRuntime.kind, SEQ2SEQ_TASKS, seq2seq.capabilities_for, seq2seq.load),
    RuntimeKind(encoder.EncoderRuntime.kind, tuple(TASKS), encoder.capabilities_for, encoder.load),
)

# Prepares a source before it loads, in the loading thread: `serve --optimize` passes the compiler's step
# here (serving never imports the compiler).
Prepare = Callable[[ModelSource], ModelSource]


def kind_for(task: str) -> RuntimeKind:
    """The row whose kind serves `task`."""
    for kind in RUNTIMES:
        if task in kind.tasks:
            return kind
    raise ValueError(f"no runtime serves the task {task!r}")


def capabilities_for(task: str | None) -> frozenset[str]:
    """What a model configured for `task` can do, known before it loads (nothing when its task is unknown)."""
    return kind_for(task).capabilities(task) if task is not None else frozenset()


def load_runtime(source: ModelSource, config: ServeConfig, hooks: Hooks | None = None, prepare: Prepare | None = None) -> Runtime:
    """Load a model (in a worker thread): prepare, weights check, tokenizer and task, backend, warm-up.

    An artifact's task and head are fixed by its report, and it runs on the runtime the report names; the artifact is
    opened (and its files hashed) once here, and handed to the loader.
    """
    from squeezer.artifact import load_artifact

    if prepare is not None and not source.artifact:  # --optimize's compile, in a child process: outside the lock,
        source = prepare(source)  # so another model's load (an evicted one's reload) does not wait minutes for it
    with LOAD_LOCK:
        artifact = load_artifact(source.path) if source.artifact else None
        if artifact is not None:
            model_config = ModelConfig(task=artifact.task, trust_remote_code=config.model.trust_remote_code)
        else:
            check_weights(source, config.model)
            model_config = config.model
        info, task = load_info(source, model_config)
        if config.cache.token_cache_entries:
            info.token_cache = LRUCache(config.cache.token_cache_entries, config.cache.token_cache_mb << 20)
        return kind_for(task).load(source, info, task, artifact, dataclasses.replace(config, model=model_config), hooks or Hooks())


__all__ = [
    "RUNTIMES", "Generating", "Hooks", "Inferring", "Prepare", "Runtime", "RuntimeKind", "RuntimeStats",
    "Vocabulary", "capabilities_for", "kind_for", "load_runtime",
]
