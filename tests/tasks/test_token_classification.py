"""token-classification against the transformers pipeline on tiny random models, and its input validation."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from squeezer.requests import plan
from squeezer.tasks import InputError
from tests.helpers import assert_close, run_direct

# The reference pipeline warns that RoBERTa's byte-level BPE has no subword prefix; both sides use its heuristic.
pytestmark = pytest.mark.filterwarnings("ignore:Tokenizer does not support real words")

ARCHS = ["bert", "distilbert", "roberta"]
STRATEGIES = ["none", "simple", "first", "average", "max"]
TEXTS = [
    "Hugging Face is based in New York City, and Paris!",
    "Sarah Connor met John Smith at 10:30 on Monday; she paid $42.50.",
    "Ceci est une phrase en français : l'été à Besançon. Das ist Müllers Straße.",
    "Numbers like 42, 3.14 and 2026 appear in texts. So do e-mails (a@b.com) and URLs!",
]
LONG = " ".join(TEXTS * 5)  # several hundred tokens, beyond the tiny models' 128


@functools.cache
def reference(folder: Path) -> Any:
    from transformers import pipeline

    return pipeline("token-classification", model=str(folder))


@pytest.fixture(params=ARCHS)
def tagger(request: pytest.FixtureRequest, tiny_model, load) -> tuple[Any, Any]:
    folder = tiny_model(request.param, "token-classification")
    return load(folder), reference(folder)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_matches_the_pipeline(tagger, strategy: str) -> None:
    model, pipe = tagger
    result = run_direct(model, TEXTS, {"aggregation_strategy": strategy})
    assert result.task == "token-classification"
    assert not result.truncated
    expected = pipe(TEXTS, aggregation_strategy=strategy)
    assert any(expected), "the tiny model should find some entities"
    assert_close(result.output, expected)


def test_default_strategy_is_simple_like_the_inference_api(tagger) -> None:
    model, pipe = tagger
    output = run_direct(model, TEXTS[0]).output
    assert_close(output, pipe(TEXTS[0], aggregation_strategy="simple"))
    for entity in output:
        assert list(entity) == ["entity_group", "score", "word", "start", "end"]
        assert type(entity["score"]) is float and type(entity["start"]) is int and type(entity["end"]) is int


def test_none_strategy_answers_plain_json_types(tagger) -> None:
    model, _ = tagger
    for entity in run_direct(model, TEXTS[1], {"aggregation_strategy": "none", "ignore_labels": []}).output:
        assert list(entity) == ["entity", "score", "index", "word", "start", "end"]
        assert type(entity["score"]) is float and type(entity["index"]) is int


@pytest.mark.parametrize("ignore", [[], ["O", "B-PER", "I-PER"], "O"])
@pytest.mark.parametrize("strategy", ["none", "simple", "average"])
def test_ignore_labels_match_the_pipeline(tagger, ignore: Any, strategy: str) -> None:
    model, pipe = tagger
    params = {"aggregation_strategy": strategy, "ignore_labels": ignore}
    labels = [ignore] if isinstance(ignore, str) else ignore
    assert_close(run_direct(model, TEXTS, params).output, pipe(TEXTS, aggregation_strategy=strategy, ignore_labels=labels))


@pytest.mark.parametrize("strategy", ["simple", "first", "average", "max"])
def test_stride_covers_long_text_like_the_pipeline(tagger, strategy: str) -> None:
    model, pipe = tagger
    params = {"aggregation_strategy": strategy, "stride": 16}
    assert len(plan(model, LONG, params).features) > 1
    result = run_direct(model, LONG, params)
    assert not result.truncated
    expected = pipe(LONG, aggregation_strategy=strategy, stride=16)
    assert max(e["end"] for e in expected) > 1000, "entities should come from beyond the first chunk"
    assert_close(result.output, expected)


def test_long_text_is_truncated_like_the_pipeline(tagger) -> None:
    model, pipe = tagger
    result = run_direct(model, LONG, {"aggregation_strategy": "first"})
    assert result.truncated
    assert_close(result.output, pipe(LONG, aggregation_strategy="first"))


def test_truncate_false_refuses_long_input(tagger) -> None:
    model, _ = tagger
    with pytest.raises(InputError, match=r"^inputs: .*exceed") as error:
        run_direct(model, LONG, {"truncate": False})
    assert error.value.status == 422


@pytest.mark.parametrize(
    ("inputs", "parameters", "field"),
    [
        ("", {}, "inputs"),
        ("   ", {}, "inputs"),
        (42, {}, "inputs"),
        ([], {}, "inputs"),
        (["fine", ""], {}, "inputs[1]"),
        (["fine", 3], {}, "inputs[1]"),
        ("fine", {"aggregation_strategy": "bogus"}, "parameters.aggregation_strategy"),
        ("fine", {"aggregation_strategy": 1}, "parameters.aggregation_strategy"),
        ("fine", {"ignore_labels": 5}, "parameters.ignore_labels"),
        ("fine", {"ignore_labels": ["O", 3]}, "parameters.ignore_labels"),
        ("fine", {"stride": -1}, "parameters.stride"),
        ("fine", {"stride": 1.5}, "parameters.stride"),
        ("fine", {"stride": 126}, "parameters.stride"),
        ("fine", {"stride": 16, "aggregation_strategy": "none"}, "parameters.stride"),
        ("fine", {"truncate": "yes"}, "parameters.truncate"),
    ],
)
def test_bad_input_names_the_field(tiny_model, load, inputs: Any, parameters: dict[str, Any], field: str) -> None:
    model = load(tiny_model("bert", "token-classification"))
    with pytest.raises(InputError) as error:
        plan(model, inputs, parameters)
    assert str(error.value).startswith(f"{field}: ")
    assert error.value.status == 422
