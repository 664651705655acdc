"""feature-extraction and sentence-similarity against the transformers pipeline and sentence-transformers."""

from __future__ import annotations

import numpy as np
import pytest

from squeezer.tasks import InputError
from tests.helpers import assert_close, run_direct

TEXTS = ["Hello world!", "Numbers: 3.14, 42 and 2026.", "Ça va? Übermäßig schön.", "a " * 40]


@pytest.mark.parametrize("arch", ["bert", "distilbert", "roberta"])
def test_token_embeddings_match_the_pipeline(arch: str, tiny_model, load) -> None:
    from transformers import pipeline

    folder = tiny_model(arch, "base")
    model = load(folder)
    reference = pipeline("feature-extraction", model=str(folder))
    for text in TEXTS:
        assert_close(run_direct(model, text).output, reference(text))
    assert_close(run_direct(model, TEXTS).output, reference(TEXTS))


@pytest.mark.slow
def test_minilm_sentence_embeddings_match_sentence_transformers(minilm_path, load) -> None:
    from sentence_transformers import SentenceTransformer

    model = load(minilm_path)
    reference = SentenceTransformer(str(minilm_path), device="cpu")
    texts = [*TEXTS, "word " * 400]  # the last one is cut to max_seq_length (256) by both
    result = run_direct(model, texts)
    assert result.truncated
    np.testing.assert_allclose(np.array(result.output), reference.encode(texts), atol=1e-5)
    single = run_direct(model, TEXTS[0]).output
    np.testing.assert_allclose(single, reference.encode(TEXTS[0]), atol=1e-5)
    assert abs(np.linalg.norm(single) - 1) < 1e-5


@pytest.mark.slow
def test_minilm_normalize_false_gives_raw_mean_pooling(minilm_path, load) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_path), device="cpu")
    raw = run_direct(load(minilm_path), "Hello world!", {"normalize": False}).output
    token_embeddings = reference.encode("Hello world!", output_value="token_embeddings").numpy()
    np.testing.assert_allclose(raw, token_embeddings.mean(axis=0), atol=1e-5)
    assert abs(np.linalg.norm(raw) - 1) > 1e-3


@pytest.mark.slow
def test_minilm_sentence_similarity_matches_sentence_transformers(minilm_path, load) -> None:
    from sentence_transformers import SentenceTransformer, util

    model = load(minilm_path)
    reference = SentenceTransformer(str(minilm_path), device="cpu")
    source, others = "A man is eating food.", ["A man is eating pasta.", "A cheetah chases prey.", "A man eats."]
    result = run_direct(model, {"source_sentence": source, "sentences": others})
    assert result.task == "sentence-similarity"
    emb = reference.encode([source, *others])
    assert_close(result.output, util.cos_sim(emb[0], emb[1:])[0].tolist())


def test_truncation_flag_and_refusal(tiny_model, load) -> None:
    model = load(tiny_model("bert", "base"))
    long_text = "word " * 500
    result = run_direct(model, long_text)
    assert result.truncated and len(result.output[0]) == model.info.max_length
    assert not run_direct(model, "short").truncated
    with pytest.raises(InputError, match="exceed this model's maximum of 128"):
        run_direct(model, long_text, {"truncate": False})


@pytest.mark.parametrize(
    ("inputs", "parameters", "field"),
    [
        ("", None, "inputs"),
        ("   ", None, "inputs"),
        ([], None, "inputs"),
        (["ok", ""], None, r"inputs\[1\]"),
        (["ok", 3], None, r"inputs\[1\]"),
        (42, None, "inputs"),
        ({"text": "x"}, None, "inputs"),
        ("ok", {"normalize": "yes"}, "parameters.normalize"),
        ("ok", {"truncate": 1}, "parameters.truncate"),
        ("ok", "not an object", "parameters"),
        ({"source_sentence": "a", "sentences": []}, None, "inputs.sentences"),
        ({"source_sentence": "", "sentences": ["b"]}, None, "inputs.source_sentence"),
        ({"source_sentence": "a", "sentences": ["b", 1]}, None, r"inputs.sentences\[1\]"),
    ],
)
def test_bad_inputs_name_the_field(inputs, parameters, field, tiny_model, load) -> None:
    model = load(tiny_model("bert", "base"))
    with pytest.raises(InputError, match=f"^{field}"):
        run_direct(model, inputs, parameters)
