"""Chat prompts: the model's own template, messages validated field by field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from squeezer.generation.chat import chat_prompt_ids
from squeezer.tasks.base import InputError


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
