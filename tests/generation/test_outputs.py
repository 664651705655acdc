"""The answer's text from a finished generation."""

from __future__ import annotations

from squeezer.generation.outputs import output_text
from squeezer.generation.params import GenerationParams


def test_output_text_prepends_the_prompt_on_request() -> None:
    assert output_text("Hi", " there", GenerationParams()) == " there"
    assert output_text("Hi", " there", GenerationParams(return_full_text=True)) == "Hi there"
