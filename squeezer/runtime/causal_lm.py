"""The causal-LM runtime: a KV-cached decoder under the continuous-batching decode loop.

The decoder is the float32 torch reference for a model folder or `.gguf` file, or a compiled artifact's
onnxruntime graph (float32, int8 or int4 weights, with a prefix cache). Prompts are tokenized as the
text-generation pipeline does (no special tokens added); chat messages go through the model's own template.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from squeezer.backends.decoder import Decoder
from squeezer.config import ServeConfig
from squeezer.generation.chat import chat_prompt_ids
from squeezer.generation.grammar import Grammars
from squeezer.generation.params import GenerationParams
from squeezer.runtime.base import (
    CHAT,
    GENERATE,
    STREAM,
    TOKENIZE,
    CacheStats,
    Completion,
    GenerationRequest,
    Hooks,
    Prompt,
    RuntimeStats,
    Streaming,
    Vocabulary,
)
from squeezer.runtime.prep import PrepThread
from squeezer.scheduling.decoding import DecodeLoop
from squeezer.sources import ModelSource
from squeezer.tasks import GENERATION_TASKS, InputError, ModelInfo

if TYPE_CHECKING:
    from squeezer.artifact import Artifact


def capabilities_for(task: str) -> frozenset[str]:
    return frozenset({GENERATE, STREAM, CHAT, TOKENIZE})


class CausalLMRuntime:
    """A causal LM ready to generate: its tokenizer (with chat template), its decoder and its decode loop.

    `backend` and `dtype` say what runs it: the float32 torch reference, or a compiled artifact's onnxruntime
    decoder and its weights (float32, int8 or int4).
    """

    kind = "causal-lm"

    def __init__(self, source: ModelSource, info: ModelInfo, decoder: Decoder, config: ServeConfig, hooks: Hooks,
                 backend: str = "torch", dtype: str = "float32") -> None:
        self.source, self.info, self.decoder = source, info, decoder
        self.vocabulary = Vocabulary(info.tokenizer, adds_special_tokens=False)  # as `_prompt` tokenizes
        self.prep = PrepThread(source.model_id)
        self.grammars = Grammars(info.tokenizer, decoder.eos_token_ids)
        self._config, self._hooks = config, hooks
        self._backend, self._dtype = backend, dtype
        self._loop: DecodeLoop | None = None

    @property
    def model_id(self) -> str:
        return self.source.model_id

    @property
    def task(self) -> str:
        return GENERATION_TASKS[0]

    @property
    def capabilities(self) -> frozenset[str]:
        return capabilities_for(self.task)

    @property
    def memory_bytes(self) -> int:
        """Weights, KV cache and prefix cache, as the decoder holds them now."""
        return self.decoder.memory_bytes

    def describe(self) -> dict[str, Any]:
        cache = self.decoder.prefix_cache
        return {
            "task": self.task, "tasks": [self.task], "backend": self._backend, "device": "cpu", "dtype": self._dtype,
            "max_total_tokens": self.decoder.max_length,
            "max_sequences": self.decoder.max_sequences,
            "prefix_cache_mb": cache.budget_bytes >> 20 if cache is not None else 0,
            "chat_template": bool(getattr(self.info.tokenizer, "chat_template", None)),
        }

    def stats(self) -> RuntimeStats:
        loop, cache = self._loop, self.decoder.prefix_cache
        return RuntimeStats(
            queue_depth=loop.depth if loop else 0,
            occupancy=loop.occupancy if loop else 0.0,
            prefix_cache=CacheStats(cache.hits, cache.misses) if cache is not None else None,
            prefix_tokens_reused=cache.tokens_reused if cache is not None else 0,
        )

    def start(self) -> None:
        on_step, on_finish = self._hooks.bind("on_step", self.model_id), self._hooks.bind("on_finish", self.model_id)
        self._loop = DecodeLoop(self.decoder, self.info.tokenizer, self._config.decoding, on_step=on_step, on_finish=on_finish,
                                max_wait=self._config.limits.request_timeout, grammars=self.grammars)
        self._loop.start()
        self.prep.accept()

    async def drain(self) -> None:
        await self.prep.drain()
        if self._loop is not None:
            await self._loop.drain()

    def close(self) -> None:
        self.prep.close()
        self.decoder.close()

    def prepare(self, prompt: Any, messages: Any, parameters: Any, tools: Any = None) -> GenerationRequest:
        params = GenerationParams.parse(parameters)
        params.check_vocabulary(len(self.info.tokenizer))
        if params.grammar:
            self.grammars.check(params.grammar)  # compiled here, on the prep thread: a bad grammar is a 422
        return GenerationRequest(self._prompt(prompt, messages, tools), params)

    def _prompt(self, prompt: Any, messages: Any, tools: Any) -> Prompt:
        """A plain prompt is tokenized as the text-generation pipeline does (no special tokens added); chat
        messages go through the model's own chat template."""
        tokenizer = self.info.tokenizer
        if messages is not None:
            ids = chat_prompt_ids(tokenizer, messages, tools)
            return Prompt(tokenizer.decode(ids), ids)
        if not isinstance(prompt, str) or not prompt:
            raise InputError("inputs: expected a non-empty string prompt")
        return Prompt(prompt, list(tokenizer(prompt, add_special_tokens=False)["input_ids"]))

    def _decode_loop(self) -> DecodeLoop:
        assert self._loop is not None, "start() the runtime before serving"
        return self._loop

    async def generate(self, request: GenerationRequest) -> Completion:
        generations = await self._decode_loop().generate_all(request.prompt.ids, request.params, request.scope)
        return Completion(self.model_id, request.prompt, request.params, generations, self.vocabulary)

    async def stream(self, request: GenerationRequest) -> Streaming:
        events = await self._decode_loop().stream(request.prompt.ids, request.params, request.scope)
        return Streaming(self.model_id, request.prompt, request.params, events, self.vocabulary)


def load(source: ModelSource, info: ModelInfo, task_name: str, artifact: Artifact | None, config: ServeConfig,
         hooks: Hooks) -> CausalLMRuntime:
    """The torch reference decoder for a folder or GGUF file; a compiled artifact's graph on onnxruntime, with
    the session settings it was timed with."""
    decoding, threads = config.decoding, config.backend.threads
    if artifact is None:
        from squeezer.backends.torch_decoder import TorchDecoder  # lazy: torch is an optional extra

        decoder: Decoder = TorchDecoder.load(source, config.model, threads, decoding.max_batch_sequences)
        backend, dtype = "torch", "float32"
    else:
        from squeezer.backends.onnx_decoder import OnnxDecoder  # lazy: onnxruntime is an optional extra

        spinning = artifact.report.get("session", {}).get("allow_spinning")
        decoder = OnnxDecoder.load(artifact.path, threads, decoding.max_batch_sequences, spinning, decoding.prefix_cache_mb << 20)
        backend, dtype = "onnxruntime", artifact.dtype
    decoder.warmup()
    info.max_length = decoder.max_length
    return CausalLMRuntime(source, info, decoder, config, hooks, backend, dtype)
