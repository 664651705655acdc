"""Fixtures for the generation tests: the tiny llama's tokenizer (it has a chat template)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_decoder_path: Callable[[str], Path]) -> Any:  # noqa: F811
    return AutoTokenizer.from_pretrained(tiny_decoder_path("llama"))
