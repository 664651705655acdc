"""What loading any model needs: the pickle check, tokenizer, config, limits and task; and the encoder model.

`squeezer.runtime.load_runtime` builds a runtime from these (in a worker thread at startup or on /load, never
on a request's path); the compiler uses them to load the reference it gates candidates against.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from squeezer import gguf_cache
from squeezer.backends import Backend
from squeezer.config import ModelConfig
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

    @property
    def task_name(self) -> str:
        return self.task.name

    def tasks(self) -> list[Task]:
        """Every task this model's head can serve (feature-extraction also answers sentence-similarity)."""
        return [t for t in TASKS.values() if t.head == self.task.head and t.supports(self.info)]

    def describe(self) -> dict[str, Any]:
        caps = self.backend.capabilities()
        return {
            "task": self.task.name,
            "tasks": [t.name for t in self.tasks()],
            "backend": caps.name,
            "device": caps.device,
            "dtype": caps.dtype,
            "instances": caps.instances,
            "max_input_tokens": caps.max_length,
        }

    @property
    def memory_bytes(self) -> int:
        """What the backend holds (0 when it cannot tell)."""
        return self.backend.capabilities().memory_bytes

    def close(self) -> None:
        self.backend.close()


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


# Tasks that accept a slow (Python) tokenizer: they only encode a prompt and decode tokens, and the models
# they serve include Marian (opus-mt), whose SentencePiece vocabularies transformers cannot convert to a fast
# tokenizer. The encoder tasks need the fast tokenizer's offsets and its speed on the event loop.
SLOW_TOKENIZER_TASKS = frozenset({"text2text-generation", "summarization", "translation"})


def load_info(source: ModelSource, model_config: ModelConfig) -> tuple[ModelInfo, str]:
    """Tokenizer, config and limits, plus the detected task (or the one the user chose)."""
    from transformers import AutoConfig, AutoTokenizer

    trust = model_config.trust_remote_code
    if source.gguf_file:  # converted from the file's metadata once, then cached: see gguf_cache
        config, tokenizer = gguf_cache.config_and_tokenizer(source, trust)
    else:
        config = AutoConfig.from_pretrained(str(source.path), trust_remote_code=trust)
        tokenizer = AutoTokenizer.from_pretrained(str(source.path), use_fast=True, trust_remote_code=trust)
    task = model_config.task or detect_task(source.path, config, gguf=bool(source.gguf_file))
    if not getattr(tokenizer, "is_fast", False) and task not in SLOW_TOKENIZER_TASKS:
        raise SourceError(f"{source.path}: no fast (Rust) tokenizer could be built for this model")
    pooling = detect_pooling(source.path)
    return ModelInfo(tokenizer, config, max_length(source.path, config, tokenizer), pooling), task


# transformers resolves its lazy imports non-atomically: two threads loading models at once can see a
# half-imported module. Loads are rare and CPU-bound anyway, so they take turns (`runtime.load_runtime`).
LOAD_LOCK = threading.Lock()
