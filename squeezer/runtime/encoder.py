"""The encoder runtime: one forward pass per input (embeddings, classification, fill-mask, QA, zero-shot).

Requests are planned (parsed and tokenized) on the event loop, their sequences go through the dynamic
batcher to the backend (torch, or an artifact's ONNX Runtime graph or OpenVINO IR), and the task shapes the outputs.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from squeezer.backends import BACKENDS, split_outputs
from squeezer.config import ServeConfig
from squeezer.loading import LoadedModel
from squeezer.requests import answer, plan
from squeezer.runtime.base import EMBED, INFER, TOKENIZE, CacheStats, Hooks, Inferred, RuntimeStats, Vocabulary
from squeezer.runtime.prep import PrepThread
from squeezer.scheduling import Batcher
from squeezer.sources import ModelSource, SourceError
from squeezer.tasks import TASKS, ModelInfo

if TYPE_CHECKING:
    from squeezer.artifact import Artifact

EMBEDDING_TASKS = ("feature-extraction", "sentence-similarity")


def capabilities_for(task: str) -> frozenset[str]:
    """Every encoder answers the Inference API; embedding models answer the embedding routes too."""
    return frozenset({INFER, TOKENIZE, *((EMBED,) if task in EMBEDDING_TASKS else ())})


class EncoderRuntime:
    """An encoder model and its batcher."""

    kind = "encoder"

    def __init__(self, model: LoadedModel, config: ServeConfig, hooks: Hooks) -> None:
        self.model = model
        self.vocabulary = Vocabulary(model.info.tokenizer)
        self.prep = PrepThread(model.model_id)
        self._config, self._hooks = config, hooks
        self._batcher: Batcher | None = None

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def task(self) -> str:
        return self.model.task_name

    @property
    def capabilities(self) -> frozenset[str]:
        return capabilities_for(self.task)

    @property
    def memory_bytes(self) -> int:
        return self.model.memory_bytes

    def describe(self) -> dict[str, Any]:
        return self.model.describe()

    def stats(self) -> RuntimeStats:
        cache = self.model.info.token_cache
        tokens = CacheStats(cache.hits, cache.misses) if cache is not None else None
        return RuntimeStats(queue_depth=self._batcher.depth if self._batcher else 0, token_cache=tokens)

    def start(self) -> None:
        head, backend = self.model.task.head, self.model.backend

        def run_batch(batch: Any) -> list[Any]:
            return split_outputs(head, backend.forward(batch), batch.lengths)

        pad_id = self.model.info.tokenizer.pad_token_id or 0
        on_batch = self._hooks.bind("on_batch", self.model_id)
        workers = backend.capabilities().instances
        self._batcher = Batcher(run_batch, pad_id, self._config.batching, on_batch, workers=workers)
        self._batcher.start()
        self.prep.accept()

    async def drain(self) -> None:
        await self.prep.drain()
        if self._batcher is not None:
            await self._batcher.drain()

    def close(self) -> None:
        self.prep.close()
        self.model.close()

    async def infer(self, inputs: Any, parameters: Any, task: str | None) -> Inferred:
        """Plan (parse, tokenize: on the prep thread), run the sequences through the batcher, answer."""
        assert self._batcher is not None, "start() the runtime before serving"
        started = time.perf_counter()
        request = await self.prep.run(plan, self.model, inputs, parameters, task)
        tokenized = time.perf_counter()
        submitted = await self._batcher.submit(request.features)
        result = answer(self.model, request, submitted.outputs)
        return Inferred(result, submitted.queue_seconds, tokenized - started, submitted.inference_seconds)


def load(source: ModelSource, info: ModelInfo, task_name: str, artifact: Artifact | None, config: ServeConfig,
         hooks: Hooks) -> EncoderRuntime:
    """The task's head on the configured backend; an artifact runs on the runtime its report names."""
    task = TASKS[task_name]
    if not task.supports(info):
        raise SourceError(f"{source.model_id}: this model cannot serve {task_name}")
    name = artifact.runtime if artifact is not None else config.backend.backend
    extra = {"artifact": artifact} if artifact is not None else {}
    backend = BACKENDS[name](source, task.head, config.model, config.backend, info.max_length, **extra)
    backend.warmup()
    return EncoderRuntime(LoadedModel(source, task, info, backend), config, hooks)
