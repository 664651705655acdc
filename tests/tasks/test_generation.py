"""Generation parameters, chat prompts, token choice against transformers' processors, stops, detokenization."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from squeezer.tasks.base import InputError
from squeezer.tasks.generation import (
    GenerationParams,
    IncrementalDecoder,
    SequenceText,
    StopMatcher,
    TokenChooser,
    chat_prompt_ids,
    choose_tokens,
    output_text,
    token_logprobs,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_decoder_path: Callable[[str], Path]) -> Any:  # noqa: F811
    return AutoTokenizer.from_pretrained(tiny_decoder_path("llama"))


def test_params_defaults_and_tgi_names() -> None:
    params = GenerationParams.parse({"max_new_tokens": 5, "stop": ["\n"], "details": True, "unknown": 1})
    assert (params.max_new_tokens, params.stop, params.details, params.return_full_text) == (5, ["\n"], True, False)
    assert not params.sampling and params.seeds() == [None]
    assert GenerationParams.parse({"stop": []}).stop is None  # what many clients send for "no stop"
    assert GenerationParams.parse(None) == GenerationParams()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"max_new_tokens": 0}, "parameters.max_new_tokens"),
        ({"top_p": 0}, "parameters.top_p"),
        ({"top_p": 1.5}, "parameters.top_p"),
        ({"temperature": -0.1}, "parameters.temperature"),
        ({"temperature": "hot"}, "parameters.temperature"),
        ({"top_k": -1}, "parameters.top_k"),
        ({"repetition_penalty": 0}, "parameters.repetition_penalty"),
        ({"num_return_sequences": 0}, "parameters.num_return_sequences"),
        ({"num_return_sequences": 2}, "parameters.num_return_sequences"),  # greedy cannot return several
        ({"seed": -1}, "parameters.seed"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "parameters.stop"),
        ({"stop": [""]}, "parameters.stop"),
        ({"do_sample": 1}, "parameters.do_sample"),
    ],
)
def test_invalid_params_name_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as err:
        GenerationParams.parse(raw)
    assert str(err.value).startswith(field) and err.value.status == 422


@pytest.mark.parametrize(
    ("raw", "sampling"),
    [
        ({}, False),
        ({"do_sample": True}, True),
        ({"temperature": 0.7}, True),  # a warper turns sampling on, as in TGI
        ({"top_k": 10}, True),
        ({"top_p": 0.9}, True),
        ({"temperature": 1.0, "top_p": 1.0, "top_k": 0}, False),
        ({"do_sample": True, "temperature": 0}, False),  # 0 means greedy
        ({"repetition_penalty": 1.3}, False),
    ],
)
def test_sampling_is_decided_like_tgi(raw: dict[str, Any], sampling: bool) -> None:
    assert GenerationParams.parse(raw).sampling is sampling


def test_seeds_count_up_from_the_request_seed() -> None:
    params = GenerationParams.parse({"do_sample": True, "seed": 5, "num_return_sequences": 3})
    assert params.seeds() == [5, 6, 7]
    assert len(set(GenerationParams.parse({"do_sample": True, "num_return_sequences": 2}).seeds())) == 2


def test_output_text_prepends_the_prompt_on_request() -> None:
    assert output_text("Hi", " there", GenerationParams()) == " there"
    assert output_text("Hi", " there", GenerationParams(return_full_text=True)) == "Hi there"


def _reference_processors(params: GenerationParams) -> LogitsProcessorList:
    """The processors `generate` builds for these parameters, in its order."""
    procs = LogitsProcessorList()
    if params.repetition_penalty not in (None, 1.0):
        procs.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.sampling:
        if params.temperature not in (None, 1.0):
            procs.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k:
            procs.append(TopKLogitsWarper(params.top_k))
        if params.top_p not in (None, 1.0):
            procs.append(TopPLogitsWarper(params.top_p))
    return procs


PROCESSOR_CASES = [
    {"repetition_penalty": 1.3},
    {"repetition_penalty": 0.7, "temperature": 0.5},
    {"do_sample": True, "top_k": 7},
    {"do_sample": True, "top_p": 0.8},
    {"temperature": 1.7, "top_k": 40, "top_p": 0.6, "repetition_penalty": 1.2},
]


@pytest.mark.parametrize("raw", PROCESSOR_CASES)
def test_processing_equals_transformers_processors(raw: dict[str, Any]) -> None:
    params = GenerationParams.parse(raw)
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(1, 300, generator=generator) * 4
    history = [3, 17, 17, 250, 99, 3]
    expected = _reference_processors(params)(torch.tensor([history]), scores.clone())
    assert torch.equal(TokenChooser(params, 0).process(scores, history), expected)


@pytest.mark.parametrize("raw", PROCESSOR_CASES[2:])
def test_seeded_choice_draws_what_manual_seed_and_multinomial_draw(raw: dict[str, Any]) -> None:
    params = GenerationParams.parse({**raw, "seed": 1234})
    scores = torch.randn(1, 300, generator=torch.Generator().manual_seed(1)) * 2
    chooser = TokenChooser(params, 1234)
    ours = [chooser.choose(scores, [1, 2]) for _ in range(20)]
    torch.manual_seed(1234)
    probs = torch.softmax(_reference_processors(params)(torch.tensor([[1, 2]]), scores.clone()), dim=-1)
    assert ours == [int(torch.multinomial(probs, 1)) for _ in range(20)]


def test_choose_tokens_mixes_plain_greedy_and_processed_rows() -> None:
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(2)).numpy()
    choosers = [TokenChooser(GenerationParams(), None), TokenChooser(GenerationParams(repetition_penalty=50.0), None)]
    choosers.append(TokenChooser(GenerationParams(), None))
    first = int(logits[1].argmax())
    tokens = choose_tokens(choosers, logits, [[], [first], []])
    assert tokens[0] == logits[0].argmax() and tokens[2] == logits[2].argmax()
    assert tokens[1] != first  # the penalty pushed the repeated token down


def test_stop_matcher_finds_the_earliest_stop_across_deltas() -> None:
    stops = StopMatcher(["END", "\n\n"])
    assert stops.find("abc E", "N") is None
    assert stops.find("abc EN", "Dxyz") == 1  # cut "D|xyz": the stop ends one character into the delta
    assert stops.find("a", "\n\nEND") == 2
    assert StopMatcher(None).find("abc", "END") is None


def test_incremental_decoding_never_splits_characters(tokenizer: Any) -> None:
    text = "naïve café 🤗 你好世界 Привет"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())  # multi-byte characters span several byte-level tokens
    prompt = tokenizer("Hello", add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(tokenizer, prompt)
    deltas = [decoder.add(token) for token in ids] + [decoder.flush()]
    assert "".join(deltas) == tokenizer.decode(ids) == text
    assert not any("\ufffd" in delta for delta in deltas)
    assert "" in deltas  # some tokens were held back until their character completed


def test_sequence_text_finish_reasons(tokenizer: Any) -> None:
    ids = tokenizer(" the capital of France", add_special_tokens=False)["input_ids"]
    eos = frozenset({1})
    length = SequenceText(tokenizer, [5], GenerationParams(), eos, max_new_tokens=2)
    assert [length.add(t)[1] for t in ids[:2]] == [None, "length"]
    stop = SequenceText(tokenizer, [5], GenerationParams(stop=["pital"]), eos, max_new_tokens=50)
    reasons = []
    for token in ids:
        reasons.append(stop.add(token)[1])
        if reasons[-1]:
            break
    assert reasons[-1] == "stop_sequence" and stop.text == " the capital"
    ended = SequenceText(tokenizer, [5], GenerationParams(), eos, max_new_tokens=50)
    assert ended.add(ids[0])[1] is None and ended.add(1) == ("", "eos_token")


def test_chat_prompt_uses_the_model_template(tokenizer: Any) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    ids = chat_prompt_ids(tokenizer, messages)
    assert ids == tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")
    parts = [{"type": "text", "text": "Capital of "}, {"type": "text", "text": "France?"}]  # OpenAI's content parts
    assert chat_prompt_ids(tokenizer, [messages[0], {"role": "user", "content": parts}]) == ids


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([], "messages"),
        ("hello", "messages"),
        (["hello"], "messages[0]"),
        ([{"role": "robot", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": "x"}, {"role": "user"}], "messages[1].content"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}], "messages[0].content"),
    ],
)
def test_invalid_messages_name_the_field(tokenizer: Any, messages: Any, field: str) -> None:
    with pytest.raises(InputError) as err:
        chat_prompt_ids(tokenizer, messages)
    assert str(err.value).startswith(field + ":")


def test_a_model_without_template_refuses_messages(tiny_decoder_path: Callable[[str], Path]) -> None:  # noqa: F811
    gpt2 = AutoTokenizer.from_pretrained(tiny_decoder_path("gpt2"))
    with pytest.raises(InputError, match="no chat template"):
        chat_prompt_ids(gpt2, [{"role": "user", "content": "hi"}])


def test_token_logprobs_are_log_softmax_with_the_top_alternatives_best_first() -> None:
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 30  # wide: a naive exp would overflow
    reference = torch.log_softmax(logits.double(), dim=-1)
    logprob, top = token_logprobs(logits.numpy(), 17, 4)
    assert logprob == pytest.approx(reference[17].item(), abs=1e-5)
    best = reference.topk(4)
    assert [t for t, _ in top] == best.indices.tolist()
    assert [lp for _, lp in top] == pytest.approx(best.values.tolist(), abs=1e-5)
    assert token_logprobs(logits.numpy(), 17, 0)[1] == ()


def test_logprob_parameters_are_validated() -> None:
    assert GenerationParams.parse({"top_n_tokens": 3}).wants_logprobs
    assert not GenerationParams.parse({"top_n_tokens": 0}).wants_logprobs
    with pytest.raises(InputError, match="top_n_tokens"):
        GenerationParams.parse({"top_n_tokens": 21})


@pytest.mark.parametrize("vocab", [3, 40, 1000, 49152])
def test_top_tokens_are_the_largest_logits_for_any_vocabulary_and_ties(vocab: int) -> None:
    gen = torch.Generator().manual_seed(vocab)
    for top_n in (1, 3, 20):
        for logits in (torch.randn(vocab, generator=gen) * 4, torch.randint(0, 3, (vocab,), generator=gen).float()):
            n = min(top_n, vocab)
            _, top = token_logprobs(logits.numpy(), 0, n)
            assert len({t for t, _ in top}) == n
            assert [logits[t].item() for t, _ in top] == logits.sort(descending=True).values[:n].tolist()


def test_frequency_and_presence_penalties_count_generated_tokens_only() -> None:
    params = GenerationParams(frequency_penalty=0.5, presence_penalty=1.0)
    chooser = TokenChooser(params, None, prompt_length=2)
    assert not chooser.plain and params.penalized
    scores = chooser.process(torch.zeros(1, 10), [5, 7, 5, 5, 7])  # prompt [5, 7], then 5, 5, 7 generated
    expected = torch.zeros(1, 10)
    expected[0, 5], expected[0, 7] = -(2 * 0.5 + 1.0), -(0.5 + 1.0)
    assert torch.equal(scores, expected)
    assert TokenChooser(GenerationParams(frequency_penalty=0.0), None).plain
    with pytest.raises(InputError, match="frequency_penalty"):
        GenerationParams.parse({"frequency_penalty": 2.5})


def test_logit_bias_is_added_to_the_scores_and_validated() -> None:
    params = GenerationParams.parse({"logit_bias": {"3": 5, "7": -100}})
    chooser = TokenChooser(params, None)
    assert not chooser.plain and params.penalized
    expected = torch.zeros(1, 10)
    expected[0, 3], expected[0, 7] = 5.0, -100.0
    assert torch.equal(chooser.process(torch.zeros(1, 10), [1, 2]), expected)
    for bad in ({"3": 101}, {"x": 1}, {"3": True}, ["3"]):
        with pytest.raises(InputError, match="logit_bias"):
            GenerationParams.parse({"logit_bias": bad})
    with pytest.raises(InputError, match="not in the vocabulary"):
        params.check_vocabulary(5)
    params.check_vocabulary(8)
