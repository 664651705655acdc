"""zero-shot-classification against the transformers pipeline on tiny NLI models, its routing and validation."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from squeezer.requests import pick_task
from squeezer.tasks import TASKS, InputError
from tests.helpers import assert_close, run_direct

ARCHS = ["bert", "distilbert", "roberta"]
LABELS = ["politics", "sports", "cooking", "science"]
LONG = "Hugging Face serves transformers models in Paris, New York and Berlin. " * 12
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Numbers like 42, 3.14 and 2026?!",
    "Café crème à Paris, déjà vu.",
    LONG,  # beyond the 128-token limit: truncated
]
TASK = "zero-shot-classification"


@functools.cache
def reference(folder: Path) -> Any:
    from transformers import pipeline

    return pipeline(TASK, model=str(folder))


def as_api(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The pipeline's {sequence, labels, scores} in the Inference API's [{label, score}] shape."""
    return [{"label": label, "score": score} for label, score in zip(result["labels"], result["scores"])]


@pytest.fixture(params=ARCHS)
def nli(request: pytest.FixtureRequest, tiny_model, load) -> tuple[Any, Any]:
    folder = tiny_model(request.param, "zero-shot")
    return load(folder, TASK), reference(folder)


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("multi_label", [False, True])
def test_scores_match_the_pipeline(nli, text: str, multi_label: bool) -> None:
    model, pipe = nli
    result = run_direct(model, text, {"candidate_labels": LABELS, "multi_label": multi_label})
    assert result.task == TASK
    assert result.truncated == (text is LONG)
    assert_close(result.output, as_api(pipe(text, candidate_labels=LABELS, multi_label=multi_label)))


@pytest.mark.parametrize(
    "parameters",
    [
        {"candidate_labels": ["politics"]},  # one label: entailment against contradiction, as multi_label
        {"candidate_labels": "politics, sports ,, cooking"},  # the pipeline's comma-separated form
        {"candidate_labels": LABELS, "hypothesis_template": "Le sujet est {}!"},
        {"candidate_labels": LABELS, "hypothesis_template": "{} it is.", "multi_label": True},
    ],
)
def test_parameters_match_the_pipeline(nli, parameters: dict[str, Any]) -> None:
    model, pipe = nli
    expected = pipe(TEXTS[2], **parameters)
    assert_close(run_direct(model, TEXTS[2], parameters).output, as_api(expected))


def test_list_input_gives_one_list_per_text(nli) -> None:
    model, pipe = nli
    result = run_direct(model, TEXTS, {"candidate_labels": LABELS})
    assert_close(result.output, [as_api(r) for r in pipe(TEXTS, candidate_labels=LABELS)])


def test_candidate_labels_route_an_nli_model_to_zero_shot(tiny_model, load) -> None:
    model = load(tiny_model("bert", "zero-shot"))
    assert model.task.name == "text-classification"
    result = run_direct(model, TEXTS[0], {"candidate_labels": LABELS})
    assert result.task == TASK
    assert sorted(entry["label"] for entry in result.output) == sorted(LABELS)
    assert run_direct(model, TEXTS[0]).task == "text-classification"


def test_models_without_entailment_label_do_not_serve_zero_shot(tiny_model, load) -> None:
    model = load(tiny_model("bert", "sequence-classification"))
    assert not TASKS[TASK].supports(model.info)
    assert pick_task(model, TEXTS[0], {"candidate_labels": LABELS}, None).name == "text-classification"
    with pytest.raises(InputError, match="cannot serve zero-shot-classification") as error:
        run_direct(model, TEXTS[0], {"candidate_labels": LABELS}, task=TASK)
    assert error.value.status == 400


def test_truncate_false_refuses_long_input(nli) -> None:
    model, _ = nli
    with pytest.raises(InputError, match=r"^inputs: .*exceed"):
        run_direct(model, LONG, {"candidate_labels": LABELS, "truncate": False})


def test_a_hypothesis_longer_than_the_model_is_refused(nli) -> None:
    model, _ = nli
    template = "word " * 200 + "{}"
    with pytest.raises(InputError, match=r"^parameters\.hypothesis_template: .*no room"):
        run_direct(model, TEXTS[0], {"candidate_labels": LABELS, "hypothesis_template": template})


@pytest.mark.parametrize(
    ("inputs", "parameters", "field"),
    [
        ("fine", {}, r"parameters\.candidate_labels: required"),
        ("fine", {"candidate_labels": []}, r"parameters\.candidate_labels"),
        ("fine", {"candidate_labels": " , ,"}, r"parameters\.candidate_labels"),
        ("fine", {"candidate_labels": ["a", 2]}, r"parameters\.candidate_labels"),
        ("fine", {"candidate_labels": 7}, r"parameters\.candidate_labels"),
        ("fine", {"candidate_labels": LABELS, "hypothesis_template": "No slot."}, r"parameters\.hypothesis_template"),
        ("fine", {"candidate_labels": LABELS, "hypothesis_template": "{label}"}, r"parameters\.hypothesis_template"),
        ("fine", {"candidate_labels": LABELS, "multi_label": "yes"}, r"parameters\.multi_label"),
        ("", {"candidate_labels": LABELS}, "inputs"),
        ([], {"candidate_labels": LABELS}, "inputs"),
        (["fine", None], {"candidate_labels": LABELS}, r"inputs\[1\]"),
        ({"text": "fine"}, {"candidate_labels": LABELS}, "inputs"),
    ],
)
def test_bad_requests_name_the_field(tiny_model, load, inputs: Any, parameters: dict[str, Any], field: str) -> None:
    model = load(tiny_model("bert", "zero-shot"), TASK)
    with pytest.raises(InputError, match=f"^{field}") as error:
        run_direct(model, inputs, parameters)
    assert error.value.status == 422
