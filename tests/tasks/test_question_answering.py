"""question-answering against the transformers pipeline on tiny random models, and its input validation."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from squeezer.requests import plan
from squeezer.tasks import InputError
from tests.helpers import assert_close, run_direct

ARCHS = ["bert", "distilbert", "roberta"]
EXAMPLES = [
    {"question": "Where is Hugging Face based?",
     "context": "Hugging Face is based in New York City, and has an office in Paris! It was founded in 2016."},
    {"question": "How much did she pay, and when?",
     "context": "Sarah Connor met John Smith at 10:30 on Monday; she paid $42.50. L'été à Besançon, c'était déjà fini."},
]
LONG_CONTEXT = " ".join(e["context"] for e in EXAMPLES * 8)  # several hundred tokens, beyond the tiny models' 128
LONG = {"question": "Who met whom in Paris?", "context": LONG_CONTEXT}
PARAMETERS = [
    {},
    {"top_k": 3},
    {"handle_impossible_answer": True},
    {"top_k": 3, "handle_impossible_answer": True},
    {"top_k": 5, "max_answer_len": 2},
    {"top_k": 3, "align_to_words": False},
    {"top_k": 40},
]
LONG_PARAMETERS = [{}, {"top_k": 3}, {"top_k": 3, "doc_stride": 32, "max_seq_len": 64}, {"handle_impossible_answer": True}]


@functools.cache
def reference(folder: Path) -> Any:
    from transformers import pipeline

    return pipeline("question-answering", model=str(folder))


@pytest.fixture(params=ARCHS)
def reader(request: pytest.FixtureRequest, tiny_model, load) -> tuple[Any, Any]:
    folder = tiny_model(request.param, "question-answering")
    return load(folder), reference(folder)


@pytest.mark.parametrize("parameters", PARAMETERS, ids=str)
def test_answers_match_the_pipeline(reader, parameters: dict[str, Any]) -> None:
    model, pipe = reader
    for example in EXAMPLES:
        result = run_direct(model, example, parameters)
        assert result.task == "question-answering"
        assert_close(result.output, pipe(**example, **parameters))


@pytest.mark.parametrize("parameters", LONG_PARAMETERS, ids=str)
def test_long_context_is_split_into_strided_features(reader, parameters: dict[str, Any]) -> None:
    model, pipe = reader
    assert len(plan(model, LONG, parameters).features) > 2
    result = run_direct(model, LONG, parameters)
    assert not result.truncated
    assert_close(result.output, pipe(**LONG, **parameters))


def test_top_k_one_answers_a_dict_with_plain_json_types(reader) -> None:
    model, _ = reader
    answer = run_direct(model, EXAMPLES[0]).output
    assert list(answer) == ["score", "start", "end", "answer"]
    assert type(answer["score"]) is float and type(answer["start"]) is int
    assert answer["answer"] == EXAMPLES[0]["context"][answer["start"] : answer["end"]]


def test_list_input_gives_one_answer_per_item(reader) -> None:
    model, pipe = reader
    for parameters in ({}, {"top_k": 2}):
        expected = [pipe(**example, **parameters) for example in [*EXAMPLES, LONG]]
        assert_close(run_direct(model, [*EXAMPLES, LONG], parameters).output, expected)


def test_long_question_beside_a_short_context_still_answers(reader) -> None:
    """The default stride would not fit beside this question, but a context that fits is never split."""
    model, pipe = reader
    example = {"question": " ".join(["what is the capital of France near the river bank"] * 6) + "?",
               "context": EXAMPLES[0]["context"]}
    assert_close(run_direct(model, example).output, pipe(**example))


@pytest.mark.parametrize(
    ("inputs", "parameters", "field"),
    [
        ("Where is it?", {}, "inputs"),
        ([], {}, "inputs"),
        ({"context": "Paris."}, {}, "inputs.question"),
        ({"question": "", "context": "Paris."}, {}, "inputs.question"),
        ({"question": "Where?", "context": "  "}, {}, "inputs.context"),
        ({"question": "Where?", "context": 5}, {}, "inputs.context"),
        ([EXAMPLES[0], "Where?"], {}, "inputs[1]"),
        ([EXAMPLES[0], {"question": "Where?"}], {}, "inputs[1].context"),
        (EXAMPLES[0], {"top_k": 0}, "parameters.top_k"),
        (EXAMPLES[0], {"top_k": "3"}, "parameters.top_k"),
        (EXAMPLES[0], {"max_answer_len": 0}, "parameters.max_answer_len"),
        (EXAMPLES[0], {"max_seq_len": -5}, "parameters.max_seq_len"),
        (EXAMPLES[0], {"max_question_len": 0}, "parameters.max_question_len"),
        (EXAMPLES[0], {"doc_stride": -1}, "parameters.doc_stride"),
        (EXAMPLES[0], {"max_seq_len": 32, "doc_stride": 40}, "parameters.doc_stride"),
        (EXAMPLES[0], {"handle_impossible_answer": "yes"}, "parameters.handle_impossible_answer"),
        (LONG, {"max_seq_len": 32, "doc_stride": 30}, "parameters.doc_stride"),
        ({"question": "why " * 200, "context": LONG_CONTEXT}, {}, "inputs.question"),
    ],
)
def test_bad_input_names_the_field(tiny_model, load, inputs: Any, parameters: dict[str, Any], field: str) -> None:
    model = load(tiny_model("bert", "question-answering"))
    with pytest.raises(InputError) as error:
        plan(model, inputs, parameters)
    assert str(error.value).startswith(f"{field}: ")
    assert error.value.status == 422
