"""Token choice against transformers' processors: penalties, warpers, seeded draws, batched greedy rows."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from squeezer.generation.params import GenerationParams
from squeezer.generation.sampling import TokenChooser, choose_tokens
from squeezer.tasks.base import InputError


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


@pytest.mark.parametrize("raw", [{"temperature": 1e-45}, {"do_sample": True, "repetition_penalty": 1e-300}])
def test_a_collapsed_distribution_chooses_its_limit_not_an_error(raw: dict[str, Any]) -> None:
    """Scores that overflow to infinity (a vanishing temperature or penalty) give softmax NaNs, which
    multinomial refuses; the limit of such a distribution is the argmax, which is what the row gets."""
    scores = torch.tensor([[0.5, 3.0, -1.0, 2.5]])
    chooser = TokenChooser(GenerationParams.parse(raw), seed=1)
    assert chooser.sampling and chooser.choose(scores, [1]) == 1


def test_a_failing_row_gets_its_error_and_the_others_their_tokens() -> None:
    class Broken(TokenChooser):
        def choose(self, scores: Any, history: Any) -> int:
            raise RuntimeError("this row's sampler broke")

    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0], [0.0, 1.0, 4.0]]).numpy()
    sampled = GenerationParams.parse({"do_sample": True, "top_k": 1})
    choosers = [TokenChooser(GenerationParams(), None), Broken(sampled, 1), TokenChooser(sampled, 2)]
    tokens = choose_tokens(choosers, logits, [[0], [0], [0]])
    assert tokens[0] == 1 and tokens[2] == 2 and isinstance(tokens[1], RuntimeError)
