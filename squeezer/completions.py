"""Text generation requests around the decode loop: prompts (plain or chat), parameters, finished answers.

The engine calls these; the HTTP dialects (Inference API, TGI, OpenAI) only shape what comes back.
Encoder-decoder models (T5, BART, Marian) answer the same generation requests (TGI serves them too): their
prompt gets the task prefix, TGI's parameters map onto `generate`'s, and a stream reports the tokens that
`generate` chooses on the seq2seq worker, in the same `TokenEvent`s a decoder's stream carries.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from squeezer.loading import GenerativeModel, Seq2SeqModel
from squeezer.scheduling.decoding import DecodeLoop, TokenStream
from squeezer.scheduling.seq2seq import Seq2SeqScheduler
from squeezer.tasks import InputError, seq2seq
from squeezer.tasks.generation import FinishReason, Generation, GenerationParams, TokenEvent, chat_prompt_ids
from squeezer.tasks.seq2seq import Seq2SeqParams


@dataclass(frozen=True)
class Prompt:
    """What the model continues: the text (for return_full_text) and its token ids."""

    text: str
    ids: list[int]


@dataclass(frozen=True)
class Completion:
    """Every finished sequence for one prompt."""

    model_id: str
    prompt: Prompt
    params: GenerationParams
    generations: list[Generation]


@dataclass
class Streaming:
    """A started streamed generation: read `events` until the one with `is_last`."""

    model_id: str
    prompt: Prompt
    params: GenerationParams
    events: TokenStream | Seq2SeqStream


def make_prompt(model: GenerativeModel, prompt: Any = None, messages: Any = None) -> Prompt:
    """A plain prompt is tokenized as the text-generation pipeline does (no special tokens added);
    chat messages go through the model's own chat template."""
    tokenizer = model.info.tokenizer
    if messages is not None:
        ids = chat_prompt_ids(tokenizer, messages)
        return Prompt(tokenizer.decode(ids), ids)
    if not isinstance(prompt, str) or not prompt:
        raise InputError("inputs: expected a non-empty string prompt")
    return Prompt(prompt, list(tokenizer(prompt, add_special_tokens=False)["input_ids"]))


async def complete(model: GenerativeModel, loop: DecodeLoop, prompt: Prompt, params: GenerationParams) -> Completion:
    generations = await loop.generate_all(prompt.ids, params)
    return Completion(model.model_id, prompt, params, generations)


async def start_stream(model: GenerativeModel, loop: DecodeLoop, prompt: Prompt, params: GenerationParams) -> Streaming:
    return Streaming(model.model_id, prompt, params, await loop.stream(prompt.ids, params))


def seq2seq_prompt(model: Seq2SeqModel, prompt: Any, messages: Any) -> Prompt:
    """An encoder-decoder's input: the task prefix and the text, cut to the model's maximum as the pipeline does."""
    if messages is not None:
        raise InputError(f"model {model.model_id} ({model.task_name}) has no chat template: send a prompt", status=400)
    if not isinstance(prompt, str) or not prompt:
        raise InputError("inputs: expected a non-empty string prompt")
    ids, _ = seq2seq.encode_input(model.task_name, prompt, model.info, truncate=True)
    return Prompt(prompt, ids)


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


def seq2seq_finish(model: Seq2SeqModel, last: int) -> FinishReason:
    """Why an encoder-decoder sequence ended, from its last token."""
    return "eos_token" if last in model.generator.eos_token_ids else "length"


def seq2seq_generation(model: Seq2SeqModel, prompt: Prompt, ids: list[int], seed: int | None) -> Generation:
    """A finished encoder-decoder sequence (`ids` without the decoder's start token)."""
    reason = seq2seq_finish(model, ids[-1]) if ids else "length"
    text = model.info.tokenizer.decode(ids, skip_special_tokens=True)
    return Generation(text, ids, reason, len(prompt.ids), len(ids), seed)


async def complete_seq2seq(model: Seq2SeqModel, scheduler: Seq2SeqScheduler, prompt: Prompt, params: GenerationParams) -> Completion:
    wanted = seq2seq_params(params)
    ran = await scheduler.submit(lambda: model.generator.generate([prompt.ids], wanted))
    generated = ran.value[0][1:]  # type: ignore[index]  # after the decoder start token
    return Completion(model.model_id, prompt, params, [seq2seq_generation(model, prompt, generated, wanted.seed)])


def start_seq2seq_stream(model: Seq2SeqModel, scheduler: Seq2SeqScheduler, prompt: Prompt, params: GenerationParams) -> Streaming:
    return Streaming(model.model_id, prompt, params, Seq2SeqStream(model, scheduler, prompt, seq2seq_params(params)))


class Seq2SeqStream:
    """Token events of one encoder-decoder generation as `generate` chooses them on the scheduler's worker.

    Each token is held until the next one arrives (or generation ends), so the last event can say it is
    the last and why. Closing the stream, or cancelling its reader, stops `generate` after its current step.
    """

    def __init__(self, model: Seq2SeqModel, scheduler: Seq2SeqScheduler, prompt: Prompt, params: Seq2SeqParams) -> None:
        loop = asyncio.get_running_loop()
        self._model, self._prompt, self._seed = model, prompt, params.seed
        self._tokens: asyncio.Queue[int | None | BaseException] = asyncio.Queue()
        self._stop = threading.Event()
        self._ids: list[int] = []
        self._sent = ""
        self._held: int | None = None
        self._done = False

        def job() -> Any:
            def on_token(token: int) -> None:
                loop.call_soon_threadsafe(self._tokens.put_nowait, token)

            return model.generator.generate([prompt.ids], params, on_token=on_token, stop=self._stop.is_set)

        self._job = scheduler.start_job(job)  # raises at once (429, unloading) before any event
        self._job.add_done_callback(self._ended)

    def _ended(self, job: asyncio.Future[Any]) -> None:
        failed = None if job.cancelled() else job.exception()
        self._tokens.put_nowait(failed)  # after every token: each was queued on the loop before the job returned

    def __aiter__(self) -> Seq2SeqStream:
        return self

    async def __anext__(self) -> TokenEvent:
        while not self._done:
            try:
                item = await self._tokens.get()
            except BaseException:  # the reader was cancelled
                await self.aclose()
                raise
            if isinstance(item, BaseException):
                self._done = True
                raise item
            held, self._held = self._held, item
            if item is None:  # generation ended: the held token is the last
                self._done = True
                if held is not None:
                    return self._event(held, last=True)
            elif held is not None:
                return self._event(held, last=False)
        raise StopAsyncIteration

    def _event(self, token: int, last: bool) -> TokenEvent:
        self._ids.append(token)
        text = self._model.info.tokenizer.decode(self._ids, skip_special_tokens=True)
        delta = ""
        if last or not text.endswith("\ufffd"):  # a byte-level token may end inside a character: wait for it
            delta, self._sent = text[len(self._sent) :], text
        reason = seq2seq_finish(self._model, token) if last else None
        return TokenEvent(token, delta, last, reason, len(self._prompt.ids), len(self._ids), self._seed)

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._stop.set()
            self._job.cancel()

    def __del__(self) -> None:
        if not self._done:  # dropped unread (a client gone): only the flag, `generate` polls it
            self._stop.set()

