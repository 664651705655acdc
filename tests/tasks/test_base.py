"""ModelInfo.encode: the direct Rust path gives exactly what the transformers tokenizer call gives."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from squeezer.tasks.base import InputError, ModelInfo

TEXTS = [
    "A short sentence.",
    "Numbers 3.14, 1e-5 and 42; punctuation!? (nested [brackets])",
    "héllo wörld, naïve café",
    "日本語のテキストと English mixed",
    "emoji 🤗 and tabs\tand\nnewlines",
    "  leading and trailing spaces  ",
    "special-looking text [SEP] <s> </s> [MASK] <mask>",
]


def infos(tiny_model: Callable[..., Path], minilm_path: Path) -> list[ModelInfo]:
    from transformers import AutoTokenizer

    folders = [minilm_path, tiny_model("bert", "base"), tiny_model("roberta", "base"), tiny_model("distilbert", "base")]
    return [ModelInfo(AutoTokenizer.from_pretrained(str(f)), None, 512) for f in folders]


def test_direct_encoding_matches_the_tokenizer_call(tiny_model: Callable[..., Path], minilm_path: Path) -> None:
    for info in infos(tiny_model, minilm_path):
        assert info._rust is not None  # every test tokenizer is a fast one: the direct path is taken
        for text in TEXTS:
            for pair in (None, "and a second segment?"):
                expected = {k: list(v) for k, v in info.tokenizer(text, pair).items()}
                got, cut = info.encode(text, pair, truncate=True)
                assert got == expected and not cut, (info.tokenizer.__class__.__name__, text, pair)


def test_direct_path_leaves_the_shared_tokenizer_untouched(minilm_path: Path) -> None:
    """Truncating calls configure the wrapper's Rust core; the private copy must not inherit that."""
    from transformers import AutoTokenizer

    info = ModelInfo(AutoTokenizer.from_pretrained(str(minilm_path)), None, 8)
    long = "one two three four five six seven eight nine ten eleven twelve"
    cut, was_cut = info.encode(long, truncate=True)
    assert was_cut and len(cut["input_ids"]) == 8
    full = info._rust.encode(long)
    assert len(full.ids) > 8
    with pytest.raises(InputError, match="exceed"):
        info.encode(long + " thirteen", truncate=False)
