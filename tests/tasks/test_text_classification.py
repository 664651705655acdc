"""text-classification against the transformers pipeline on tiny random models, and its input validation."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from transformers import PretrainedConfig

from squeezer.tasks import InputError
from squeezer.tasks.text_classification import default_function
from tests.helpers import assert_close, run_direct

ARCHS = ["bert", "distilbert", "roberta"]
LONG = "Hugging Face serves transformers models in Paris, New York and Berlin. " * 12
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Numbers like 42, 3.14 and 2026?!",
    "Café crème à Paris, déjà vu.",
    LONG,  # beyond the 128-token limit: truncated
]
PAIRS = [("Is it sunny?", "The sun shines brightly today."), ("Short question?", LONG), (LONG, LONG)]


@functools.cache
def reference(folder: Path) -> Any:
    from transformers import pipeline

    return pipeline("text-classification", model=str(folder))


@pytest.fixture(params=ARCHS)
def classifier(request: pytest.FixtureRequest, tiny_model, load) -> tuple[Any, Any]:
    folder = tiny_model(request.param, "sequence-classification")
    return load(folder), reference(folder)


@pytest.mark.parametrize("text", TEXTS)
def test_default_answers_every_label_like_the_pipeline(classifier, text: str) -> None:
    model, pipe = classifier
    result = run_direct(model, text)
    assert result.task == "text-classification"
    assert result.truncated == (text is LONG)
    assert_close(result.output, [pipe(text, top_k=None, truncation=True)])


@pytest.mark.parametrize("top_k", [1, 2, 5])
@pytest.mark.parametrize("function", ["sigmoid", "softmax", "none"])
def test_parameters_match_the_pipeline(classifier, top_k: int, function: str) -> None:
    model, pipe = classifier
    params = {"top_k": top_k, "function_to_apply": function}
    expected = pipe(TEXTS[1], top_k=top_k, function_to_apply=function)
    assert len(expected) == min(top_k, 2)
    assert_close(run_direct(model, TEXTS[1], params).output, [expected])


def test_list_input_gives_one_list_per_text(classifier) -> None:
    model, pipe = classifier
    result = run_direct(model, TEXTS, {"top_k": 1})
    assert result.truncated
    assert_close(result.output, pipe(TEXTS, top_k=1, truncation=True))


@pytest.mark.parametrize("pair", PAIRS)
def test_text_pairs_match_the_pipeline(classifier, pair: tuple[str, str]) -> None:
    model, pipe = classifier
    inputs = {"text": pair[0], "text_pair": pair[1]}
    result = run_direct(model, inputs)
    assert result.truncated == (LONG in pair)
    assert_close(result.output, [pipe(inputs, top_k=None, truncation=True)])
    assert_close(run_direct(model, [inputs, TEXTS[0]]).output, pipe([inputs, TEXTS[0]], top_k=None, truncation=True))


def test_truncate_false_refuses_long_input(classifier) -> None:
    model, _ = classifier
    with pytest.raises(InputError, match=r"^inputs: .*exceed") as error:
        run_direct(model, LONG, {"truncate": False})
    assert error.value.status == 422


@pytest.mark.parametrize(
    ("config", "function"),
    [
        ({"num_labels": 1}, "sigmoid"),
        ({"num_labels": 3}, "softmax"),
        ({"num_labels": 3, "problem_type": "multi_label_classification"}, "sigmoid"),
        ({"num_labels": 1, "problem_type": "regression"}, "none"),
    ],
)
def test_default_function_follows_the_config(config: dict[str, Any], function: str) -> None:
    assert default_function(PretrainedConfig(**config)) == function


@pytest.mark.parametrize(
    ("inputs", "parameters", "field"),
    [
        ("", {}, "inputs"),
        ("   ", {}, "inputs"),
        ([], {}, "inputs"),
        (42, {}, "inputs"),
        (["fine", 3], {}, r"inputs\[1\]"),
        ([""], {}, r"inputs\[0\]"),
        ({"text": ""}, {}, r"inputs\.text"),
        ({"text": "a", "text_pair": 5}, {}, r"inputs\.text_pair"),
        ({"txt": "a"}, {}, "inputs"),
        ("fine", {"top_k": 0}, r"parameters\.top_k: must be a positive integer"),
        ("fine", {"top_k": "3"}, r"parameters\.top_k"),
        ("fine", {"top_k": True}, r"parameters\.top_k"),
        ("fine", {"function_to_apply": "relu"}, r"parameters\.function_to_apply: must be one of"),
        ("fine", {"truncate": "no"}, r"parameters\.truncate"),
        ("fine", [1], "parameters"),
    ],
)
def test_bad_requests_name_the_field(tiny_model, load, inputs: Any, parameters: Any, field: str) -> None:
    model = load(tiny_model("bert", "sequence-classification"))
    with pytest.raises(InputError, match=f"^{field}") as error:
        run_direct(model, inputs, parameters)
    assert error.value.status == 422
