"""The encoder-decoder runtime (T5, BART, Marian): text2text-generation, summarization and translation.

Requests run one at a time on a single worker (`scheduling/seq2seq.py`), a request's inputs in one
`generate` batch. The Inference API route answers as transformers' pipelines do (`tasks/seq2seq.py`); the
generation routes (TGI serves these models too) get the task prefix, TGI's parameters mapped onto
`generate`'s with one beam, and streams of the same `TokenEvent`s a decoder's stream carries.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from squeezer.config import ServeConfig
from squeezer.generation.outputs import FinishReason, Generation
from squeezer.generation.params import GenerationParams
from squeezer.requests import Answer
from squeezer.runtime.base import (
    GENERATE,
    INFER,
    STREAM,
    TOKENIZE,
    Completion,
    GenerationRequest,
    Hooks,
    Inferred,
    Prompt,
    RuntimeStats,
    Streaming,
    Vocabulary,
)
from squeezer.runtime.prep import PrepThread
from squeezer.runtime.seq2seq_stream import Seq2SeqStream
from squeezer.scheduling.seq2seq import Ran, Seq2SeqScheduler
from squeezer.sources import ModelSource, SourceError
from squeezer.tasks import InputError, ModelInfo, seq2seq
from squeezer.tasks.seq2seq import Seq2SeqParams

if TYPE_CHECKING:
    from squeezer.artifact import Artifact


def capabilities_for(task: str) -> frozenset[str]:
    return frozenset({INFER, GENERATE, STREAM, TOKENIZE})


def seq2seq_params(params: GenerationParams) -> Seq2SeqParams:
    """TGI's parameters as `generate` takes them for an encoder-decoder; what it cannot do is refused.

    As in TGI, one beam: greedy unless sampling is asked for, even where the model's generation config
    (what its pipeline uses on the Inference API route) asks for beam search; beams cannot stream.
    """
    if params.stop:
        raise InputError("parameters.stop: encoder-decoder models do not support stop sequences")
    if params.num_return_sequences > 1:
        raise InputError("parameters.num_return_sequences: encoder-decoder models return one sequence here")
    if params.frequency_penalty or params.presence_penalty or params.logit_bias:
        raise InputError("parameters.frequency_penalty, presence_penalty, logit_bias: encoder-decoder models do not "
                         "support them here")
    if params.top_n_tokens:
        raise InputError("parameters.top_n_tokens: encoder-decoder models do not report log-probabilities here")
    if params.grammar:
        raise InputError("parameters.grammar: structured output is served for causal LMs, not encoder-decoder models")
    sampling = params.sampling
    return Seq2SeqParams(
        max_new_tokens=params.max_new_tokens,
        num_beams=1,
        do_sample=sampling,
        temperature=params.temperature if sampling and params.temperature else None,
        top_k=(params.top_k or None) if sampling else None,
        top_p=params.top_p if sampling else None,
        repetition_penalty=params.repetition_penalty,
        seed=params.seed if sampling else None,
    )


class Seq2SeqRuntime:
    """An encoder-decoder and the worker that runs its `generate` calls one request at a time."""

    kind = "seq2seq"

    def __init__(self, source: ModelSource, info: ModelInfo, generator: Any, task: str, config: ServeConfig) -> None:
        self.source, self.info, self._task = source, info, task
        self.generator = generator  # squeezer.backends.torch_seq2seq.TorchSeq2Seq (torch is an optional extra)
        self.vocabulary = Vocabulary(info.tokenizer)
        self.prep = PrepThread(source.model_id)
        self._config = config
        self._scheduler: Seq2SeqScheduler | None = None

    @property
    def model_id(self) -> str:
        return self.source.model_id

    @property
    def task(self) -> str:
        return self._task

    @property
    def capabilities(self) -> frozenset[str]:
        return capabilities_for(self.task)

    @property
    def memory_bytes(self) -> int:
        return int(self.generator.memory_bytes)

    def describe(self) -> dict[str, Any]:
        return {"task": self.task, "tasks": [self.task], "backend": "torch", "device": "cpu", "dtype": "float32",
                "max_input_tokens": self.info.max_length}

    def stats(self) -> RuntimeStats:
        return RuntimeStats(queue_depth=self._scheduler.depth if self._scheduler else 0)

    def start(self) -> None:
        self._scheduler = Seq2SeqScheduler(self._config.batching.max_queue, self._config.limits.request_timeout)
        self.prep.accept()

    async def drain(self) -> None:
        await self.prep.drain()
        if self._scheduler is not None:
            await self._scheduler.drain()

    def close(self) -> None:
        self.prep.close()
        self.generator.close()

    def _worker(self) -> Seq2SeqScheduler:
        assert self._scheduler is not None, "start() the runtime before serving"
        return self._scheduler

    async def _run(self, job: Callable[[Callable[[], bool]], Any], size: int = 1) -> Ran:
        """Run `generate` on the worker; when the caller goes away (its deadline, a disconnect), `generate`
        stops after its current step instead of grinding on for nobody."""
        stop = threading.Event()
        try:
            return await self._worker().submit(lambda: job(stop.is_set), size)
        except asyncio.CancelledError:
            stop.set()
            raise

    def _check_new_tokens(self, wanted: int | None) -> None:
        """A request may not ask for more new tokens than `--max-new-tokens`, nor than the decoder has positions
        for (a request that names none is cut to them by the generator; decoders check their context in their loop)."""
        limit = self._config.decoding.max_new_tokens
        if wanted is not None and wanted > limit:
            raise InputError(f"parameters.max_new_tokens: {wanted} exceeds the limit of {limit}")
        room = self.generator.max_new_tokens
        if wanted is not None and room is not None and wanted > room:
            raise InputError(f"parameters.max_new_tokens: {wanted} exceeds the {room} new tokens this model's decoder "
                             "has positions for")

    async def infer(self, inputs: Any, parameters: Any, task: str | None) -> Inferred:
        """The pipeline's answer: tokenize with the task prefix, `generate` on the worker, decode."""
        if task is not None and task != self.task:
            raise InputError(f"model {self.model_id} cannot serve {task}; it serves: {self.task}", status=400)
        started = time.perf_counter()
        request = seq2seq.parse(self.task, inputs, parameters, self.info)
        self._check_new_tokens(request.params.max_new_tokens)
        tokenized = time.perf_counter()
        generator = self.generator
        ran = await self._run(lambda stop: generator.generate(request.input_ids, request.params, stop=stop), len(request.input_ids))
        output = seq2seq.finish(request, ran.value, self.info.tokenizer)  # type: ignore[arg-type]
        sampled = request.params.do_sample if request.params.do_sample is not None else generator.generation_config.do_sample
        result = Answer(output, self.task, request.truncated, request.n_tokens)
        return Inferred(result, ran.queue_seconds, tokenized - started, ran.inference_seconds, cacheable=not sampled)

    def prepare(self, prompt: Any, messages: Any, parameters: Any, tools: Any = None) -> GenerationRequest:
        """The task prefix and the text, cut to the model's maximum as the pipeline does (no CHAT capability: the
        engine refuses messages, and with them tools, before they get here)."""
        params = GenerationParams.parse(parameters)
        self._check_new_tokens(params.max_new_tokens)
        if not isinstance(prompt, str) or not prompt:
            raise InputError("inputs: expected a non-empty string prompt")
        ids, _ = seq2seq.encode_input(self.task, prompt, self.info, truncate=True)
        return GenerationRequest(Prompt(prompt, ids), params)

    def _finish(self, last: int) -> FinishReason:
        """Why a sequence ended, from its last token."""
        return "eos_token" if last in self.generator.eos_token_ids else "length"

    async def generate(self, request: GenerationRequest) -> Completion:
        wanted = seq2seq_params(request.params)
        ran = await self._run(lambda stop: self.generator.generate([request.prompt.ids], wanted, stop=stop))
        ids = ran.value[0][1:]  # type: ignore[index]  # after the decoder start token
        reason = self._finish(ids[-1]) if ids else "length"
        text = self.info.tokenizer.decode(ids, skip_special_tokens=True)
        generation = Generation(text, ids, reason, len(request.prompt.ids), len(ids), wanted.seed)
        return Completion(self.model_id, request.prompt, request.params, [generation], self.vocabulary)

    async def stream(self, request: GenerationRequest) -> Streaming:
        events = Seq2SeqStream(self.generator, self.info.tokenizer, self._worker(), request.prompt.ids,
                               seq2seq_params(request.params), self._finish)
        return Streaming(self.model_id, request.prompt, request.params, events, self.vocabulary)


def load(source: ModelSource, info: ModelInfo, task_name: str, artifact: Artifact | None, config: ServeConfig,
         hooks: Hooks) -> Seq2SeqRuntime:
    from squeezer.backends.torch_seq2seq import TorchSeq2Seq  # lazy: torch is an optional extra

    if artifact is not None:
        raise SourceError(f"{source.model_id}: encoder-decoder models are served on torch; artifacts are not supported")
    if not getattr(info.config, "is_encoder_decoder", False):
        raise SourceError(f"{source.model_id}: {task_name} needs an encoder-decoder model (T5, BART, Marian, ...)")
    generator = TorchSeq2Seq.load(source, config.model, info.tokenizer, task_name, config.backend.threads)
    generator.warmup()
    return Seq2SeqRuntime(source, info, generator, task_name, config)
