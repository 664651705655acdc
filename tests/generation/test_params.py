"""Generation parameters: TGI's names, validation naming the field, when sampling is on, seeds, logprob options."""

from __future__ import annotations

from typing import Any

import pytest

from squeezer.generation.params import GenerationParams
from squeezer.tasks.base import InputError


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
        # Bounds on the work one request may ask for, and values no sampler can use (issue 13).
        ({"num_return_sequences": 17, "do_sample": True}, "parameters.num_return_sequences"),
        ({"stop": ["x" * 257]}, "parameters.stop"),
        ({"temperature": float("nan")}, "parameters.temperature"),
        ({"top_p": float("inf")}, "parameters.top_p"),
        ({"repetition_penalty": float("inf")}, "parameters.repetition_penalty"),
        ({"logit_bias": {"\u00b2": 1}}, "parameters.logit_bias"),  # "²".isdigit(), but int("²") fails
        ({"logit_bias": {"1" * 40: 1}}, "parameters.logit_bias"),
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


def test_logprob_parameters_are_validated() -> None:
    assert GenerationParams.parse({"top_n_tokens": 3}).wants_logprobs
    assert not GenerationParams.parse({"top_n_tokens": 0}).wants_logprobs
    with pytest.raises(InputError, match="top_n_tokens"):
        GenerationParams.parse({"top_n_tokens": 21})
