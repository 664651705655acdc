"""fill-mask against the transformers pipeline on tiny masked-LM models, and its input validation."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest

from squeezer.tasks import InputError
from tests.helpers import assert_close, run_direct

ARCHS = ["bert", "distilbert", "roberta"]
FILLER = " Hugging Face serves transformers models in Paris, New York and Berlin." * 12
TEMPLATES = [
    "The capital of France is {mask}.",
    "Numbers like 42, {mask} and 2026?!",
    "Café crème à {mask}, déjà vu.",
    "The {mask} fox jumps over the {mask} dog.",  # several masks: one list per mask
    "{mask} is where it starts." + FILLER,  # cut to the model's length, mask kept
]


@functools.cache
def reference(folder: Path) -> Any:
    from transformers import pipeline

    return pipeline("fill-mask", model=str(folder))


@pytest.fixture(params=ARCHS)
def masked(request: pytest.FixtureRequest, tiny_model, load) -> tuple[Any, Any]:
    folder = tiny_model(request.param, "masked-lm")
    model = load(folder)
    return model, reference(folder), model.info.tokenizer.mask_token


@pytest.mark.parametrize("template", TEMPLATES)
def test_default_top_5_matches_the_pipeline(masked, template: str) -> None:
    model, pipe, mask = masked
    text = template.format(mask=mask)
    result = run_direct(model, text)
    assert result.task == "fill-mask"
    assert result.truncated == template.endswith(FILLER)
    assert_close(result.output, pipe(text, tokenizer_kwargs={"truncation": True}))


@pytest.mark.parametrize("top_k", [1, 3, 12])
def test_top_k_matches_the_pipeline(masked, top_k: int) -> None:
    model, pipe, mask = masked
    for template in TEMPLATES[:4]:
        text = template.format(mask=mask)
        assert_close(run_direct(model, text, {"top_k": top_k}).output, pipe(text, top_k=top_k))


@pytest.mark.parametrize(
    "targets",
    [
        ["paris", "the", "fox", "Ġthe"],  # WordPiece and byte-level BPE vocabulary entries
        "Paris",  # a single string
        [" Paris", "Berlin", "zebra", "xylophone"],  # out-of-vocabulary words stand for their first token
        ["the", "the", "The"],  # duplicates count once
    ],
)
@pytest.mark.parametrize("top_k", [2, 5])
def test_targets_match_the_pipeline(masked, targets: Any, top_k: int) -> None:
    model, pipe, mask = masked
    for template in TEMPLATES[:4]:
        text = template.format(mask=mask)
        params = {"targets": targets, "top_k": top_k}
        assert_close(run_direct(model, text, params).output, pipe(text, **params))


def test_list_input_gives_one_answer_per_text(masked) -> None:
    model, pipe, mask = masked
    texts = [template.format(mask=mask) for template in TEMPLATES]
    result = run_direct(model, texts, {"top_k": 2})
    assert result.truncated
    assert_close(result.output, pipe(texts, top_k=2, tokenizer_kwargs={"truncation": True}))
    assert_close(run_direct(model, texts[:1]).output, [pipe(texts[0])])  # a list of one stays a list


def test_texts_without_a_mask_are_refused(masked) -> None:
    model, _, mask = masked
    missing = rf"^inputs: must contain the mask token {re.escape(mask)}"
    with pytest.raises(InputError, match=missing + ", got 'No mask here.'"):
        run_direct(model, "No mask here.")
    with pytest.raises(InputError, match=missing + " within its first"):
        run_direct(model, FILLER + f" {mask}.")
    with pytest.raises(InputError, match=r"^inputs: .*exceed"):
        run_direct(model, TEMPLATES[4].format(mask=mask), {"truncate": False})


def test_targets_that_map_to_no_token_are_refused(tiny_model, load) -> None:
    model = load(tiny_model("bert", "masked-lm"))
    with pytest.raises(InputError, match=r"^parameters\.targets: none of the targets"):
        run_direct(model, "Paris is [MASK].", {"targets": ["\u200b"]})  # BERT's normalizer drops it entirely


@pytest.mark.parametrize(
    ("inputs", "parameters", "field"),
    [
        ("", {}, "inputs"),
        ([], {}, "inputs"),
        (3.5, {}, "inputs"),
        (["Paris is [MASK].", ""], {}, r"inputs\[1\]"),
        ("Paris is [MASK].", {"top_k": 0}, r"parameters\.top_k: must be a positive integer"),
        ("Paris is [MASK].", {"top_k": -2}, r"parameters\.top_k: must be a positive integer"),
        ("Paris is [MASK].", {"top_k": 2.5}, r"parameters\.top_k"),
        ("Paris is [MASK].", {"targets": []}, r"parameters\.targets"),
        ("Paris is [MASK].", {"targets": ["ok", 1]}, r"parameters\.targets"),
        ("Paris is [MASK].", {"targets": 5}, r"parameters\.targets"),
    ],
)
def test_bad_requests_name_the_field(tiny_model, load, inputs: Any, parameters: dict[str, Any], field: str) -> None:
    model = load(tiny_model("bert", "masked-lm"))
    with pytest.raises(InputError, match=f"^{field}") as error:
        run_direct(model, inputs, parameters)
    assert error.value.status == 422
