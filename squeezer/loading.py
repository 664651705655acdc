"""Load a resolved model source into what serving needs: tokenizer and limits, task, backend.

This runs in a worker thread at startup (or on /load), never on a request's path.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from squeezer.backends import BACKENDS, Backend
from squeezer.config import BackendConfig, ModelConfig
from squeezer.detect import detect_pooling, detect_task, max_length
from squeezer.sources import ModelSource, SourceError
from squeezer.tasks import TASKS, ModelInfo, Task


@dataclass
class LoadedModel:
    """A model ready to run: its id, default task, the tasks it can also serve, and its backend."""

    source: ModelSource
    task: Task
    info: ModelInfo
    backend: Backend

    @property
    def model_id(self) -> str:
        return self.source.model_id

    def tasks(self) -> list[Task]:
        """Every task this model's head can serve (feature-extraction also answers sentence-similarity)."""
        return [t for t in TASKS.values() if t.head == self.task.head and t.supports(self.info)]


def check_weights(source: ModelSource, model_config: ModelConfig) -> None:
    """Refuse pickle weights unless the user said they trust them: unpickling runs arbitrary code."""
    names = {p.suffix for p in source.weights_files()}
    if source.gguf_file or ".safetensors" in names or model_config.allow_pickle:
        return
    if names & {".bin", ".pt", ".pth"}:
        raise SourceError(
            f"{source.path} has only pickle weights (.bin), which can run arbitrary code when loaded; "
            "convert them to safetensors, or pass --allow-pickle if you trust this model"
        )
    raise SourceError(f"{source.path} holds no weights (.safetensors)")


def load_info(source: ModelSource, model_config: ModelConfig) -> tuple[ModelInfo, str]:
    """Tokenizer, config and limits, plus the detected task (or the one the user chose)."""
    from transformers import AutoConfig, AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": model_config.trust_remote_code}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    config = AutoConfig.from_pretrained(str(source.path), **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(source.path), use_fast=True, **kwargs)
    if not getattr(tokenizer, "is_fast", False):
        raise SourceError(f"{source.path}: no fast (Rust) tokenizer could be built for this model")
    task = model_config.task or detect_task(source.path, config)
    pooling = detect_pooling(source.path)
    return ModelInfo(tokenizer, config, max_length(source.path, config, tokenizer), pooling), task


# transformers resolves its lazy imports non-atomically: two threads loading models at once can see a
# half-imported module. Loads are rare and CPU-bound anyway, so they take turns.
_LOAD_LOCK = threading.Lock()


def load_model(source: ModelSource, model_config: ModelConfig, backend_config: BackendConfig) -> LoadedModel:
    """Load a model (called in a worker thread): weights check, tokenizer and task, backend, warm-up."""
    with _LOAD_LOCK:
        return _load_model(source, model_config, backend_config)


def _load_model(source: ModelSource, model_config: ModelConfig, backend_config: BackendConfig) -> LoadedModel:
    check_weights(source, model_config)
    info, task_name = load_info(source, model_config)
    task = TASKS[task_name]
    if not task.supports(info):
        raise SourceError(f"{source.model_id}: this model cannot serve {task_name}")
    backend = BACKENDS[backend_config.backend](source, task.head, model_config, backend_config, info.max_length)
    backend.warmup()
    return LoadedModel(source, task, info, backend)
