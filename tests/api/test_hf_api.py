"""The Hugging Face Inference API dialect through a real server process and huggingface_hub's client."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from huggingface_hub import InferenceClient

from tests.helpers import assert_close, error_message

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def client(server, model_id: str) -> InferenceClient:
    return InferenceClient(model=f"{server.url}/models/{model_id}")


def post(server, path: str, **kwargs) -> httpx.Response:
    return httpx.post(server.url + path, timeout=60, **kwargs)


def test_feature_extraction_matches_sentence_transformers(server, minilm_path) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_path), device="cpu")
    vector = client(server, MINILM).feature_extraction("The weather is lovely today.")
    np.testing.assert_allclose(vector, reference.encode("The weather is lovely today."), atol=1e-5)
    similarities = client(server, MINILM).sentence_similarity("A cat sleeps.", ["A kitten naps.", "Stock markets fell."])
    assert len(similarities) == 2 and similarities[0] > similarities[1]


def test_the_server_root_embeds_with_the_first_model_like_tei(server) -> None:
    """TEI users give the client the server's address alone: the root answers for the first model."""
    root = InferenceClient(model=server.url).feature_extraction("The weather is lovely today.")
    np.testing.assert_array_equal(root, client(server, MINILM).feature_extraction("The weather is lovely today."))


def test_token_embeddings_for_a_plain_model(server, tiny_model) -> None:
    from transformers import pipeline

    vector = client(server, "tiny/base").feature_extraction("Hello there")
    reference = pipeline("feature-extraction", model=str(tiny_model("bert", "base")))("Hello there")
    np.testing.assert_allclose(vector, np.array(reference, dtype=np.float32), atol=1e-5)


def test_text_classification(server, tiny_model) -> None:
    from transformers import pipeline

    result = client(server, "tiny/text-classification").text_classification("I love this!")
    reference = pipeline("text-classification", model=str(tiny_model("bert", "sequence-classification")))
    expected = reference("I love this!", top_k=None)
    assert [r.label for r in result] == [e["label"] for e in expected]
    assert_close([r.score for r in result], [e["score"] for e in expected])
    top1 = client(server, "tiny/text-classification").text_classification("I love this!", top_k=1)
    assert len(top1) == 1 and top1[0].label == expected[0]["label"]


def test_token_classification(server) -> None:
    result = client(server, "tiny/token-classification").token_classification("Sarah lives in Paris with John.")
    assert isinstance(result, list)
    for entity in result:
        assert entity.entity_group and 0 <= entity.start < entity.end and entity.word


def test_question_answering(server) -> None:
    answer = client(server, "tiny/question-answering").question_answering(
        question="Where does Sarah live?", context="Sarah lives in Paris with John."
    )
    assert answer.answer == "Sarah lives in Paris with John."[answer.start : answer.end]
    several = client(server, "tiny/question-answering").question_answering(
        question="Where does Sarah live?", context="Sarah lives in Paris with John.", top_k=3
    )
    assert isinstance(several, list) and len(several) == 3


def test_fill_mask(server) -> None:
    result = client(server, "tiny/fill-mask").fill_mask("Paris is the [MASK] of France.")
    assert len(result) == 5 and all("[MASK]" not in r.sequence for r in result)
    assert [r.score for r in result] == sorted((r.score for r in result), reverse=True)


def test_zero_shot_classification(server) -> None:
    result = client(server, "tiny/zero-shot").zero_shot_classification(
        "The match ended in a draw.", ["sports", "politics", "cooking"]
    )
    assert sorted(r.label for r in result) == ["cooking", "politics", "sports"]
    assert abs(sum(r.score for r in result) - 1) < 1e-5


def test_list_inputs_give_one_result_each_in_order(server) -> None:
    texts = ["first text", "second, longer text with more words", "third"]
    batch = post(server, f"/models/{MINILM}", json={"inputs": texts}).json()
    singles = [post(server, f"/models/{MINILM}", json={"inputs": t}).json() for t in texts]
    assert_close(batch, singles)


def test_bare_string_and_raw_text_bodies(server) -> None:
    as_json = post(server, f"/models/{MINILM}", json={"inputs": "hello world"}).json()
    bare = post(server, f"/models/{MINILM}", json="hello world").json()
    raw = post(server, f"/models/{MINILM}", content=b"hello world", headers={"content-type": "text/plain"}).json()
    assert_close(bare, as_json)
    assert_close(raw, as_json)


def test_truncation_is_announced_and_can_be_refused(server) -> None:
    long_text = "word " * 2000
    response = post(server, f"/models/{MINILM}", json={"inputs": long_text})
    assert response.status_code == 200 and response.headers["x-squeezer-truncated"] == "true"
    assert "x-squeezer-truncated" not in post(server, f"/models/{MINILM}", json={"inputs": "short"}).headers
    refused = post(server, f"/models/{MINILM}", json={"inputs": long_text, "parameters": {"truncate": False}})
    assert refused.status_code == 422 and "maximum of 256" in error_message(refused)


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "fragment"),
    [
        (f"/models/{MINILM}", {"json": {"inputs": ""}}, 422, "inputs"),
        (f"/models/{MINILM}", {"json": {"inputs": []}}, 422, "inputs"),
        (f"/models/{MINILM}", {"json": {"inputs": 42}}, 422, "inputs"),
        (f"/models/{MINILM}", {"json": {"inputs": [1, 2]}}, 422, "inputs[0]"),
        (f"/models/{MINILM}", {"json": {"text": "no inputs"}}, 422, "inputs"),
        (f"/models/{MINILM}", {"json": {"inputs": "x", "parameters": "bad"}}, 422, "parameters"),
        (f"/models/{MINILM}", {"json": {"inputs": "x", "options": []}}, 422, "options"),
        (f"/models/{MINILM}", {"content": b"null", "headers": {"content-type": "application/json"}}, 422, "inputs"),
        (f"/models/{MINILM}", {"content": b""}, 400, "empty"),
        (f"/models/{MINILM}", {"content": b"\xff\xfe\x00", "headers": {"content-type": "text/plain"}}, 400, "UTF-8"),
        (f"/models/{MINILM}", {"content": b'{"inputs": ', "headers": {"content-type": "application/json"}}, 400, "JSON"),
        (f"/models/{MINILM}", {"content": b'{"inputs": "a\\ud800"}', "headers": {"content-type": "application/json"}}, 400, "lone surrogate"),
        (f"/models/{MINILM}", {"content": b'["ok", "\\udfff"]', "headers": {"content-type": "application/json"}}, 400, "lone surrogate"),
        ("/embed", {"content": b'{"inputs": "\\ud800"}', "headers": {"content-type": "application/json"}}, 400, "lone surrogate"),
        ("/models/no/such-model", {"json": {"inputs": "x"}}, 404, "no/such-model"),
        (f"/models/{MINILM}/pipeline/no-such-task", {"json": {"inputs": "x"}}, 404, "no-such-task"),
        (f"/models/{MINILM}/pipeline/fill-mask", {"json": {"inputs": "x"}}, 400, "cannot serve fill-mask"),
        (f"/models/{MINILM}/pipeline/text2text-generation", {"json": {"inputs": "x"}}, 400, "cannot serve text2text-generation"),
        ("/models/tiny/fill-mask", {"json": {"inputs": "no mask here"}}, 422, "[MASK]"),
        ("/models/tiny/zero-shot", {"json": {"inputs": "x", "parameters": {"candidate_labels": []}}}, 422, "candidate_labels"),
        ("/models/tiny/question-answering", {"json": {"inputs": {"question": "q"}}}, 422, "context"),
        ("/models/tiny/text-classification", {"json": {"inputs": "x", "parameters": {"top_k": 0}}}, 422, "top_k"),
        ("/models/tiny/token-classification", {"json": {"inputs": "x", "parameters": {"aggregation_strategy": "best"}}}, 422, "aggregation_strategy"),
    ],
)
def test_bad_requests_get_json_errors(server, path, kwargs, status, fragment) -> None:
    response = post(server, path, **kwargs)
    assert response.status_code == status, response.text
    assert fragment in error_message(response)


def test_oversized_payload_is_refused_with_413(server) -> None:
    response = post(server, f"/models/{MINILM}", json={"inputs": "a" * 2_100_000})
    assert response.status_code == 413 and "limit" in error_message(response)


def test_unknown_route_and_method_are_json(server) -> None:
    assert error_message(httpx.get(server.url + "/nope"))
    response = httpx.get(server.url + f"/models/{MINILM}")
    assert response.status_code == 405 and error_message(response)


def test_health_info_and_models(server) -> None:
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["models"][MINILM] == "ready"
    info = httpx.get(server.url + "/info").json()
    minilm = next(m for m in info["models"] if m["id"] == MINILM)
    assert minilm["task"] == "feature-extraction" and "sentence-similarity" in minilm["tasks"]
    assert minilm["backend"] == "torch" and minilm["max_input_tokens"] == 256
    assert info["versions"]["transformers"].startswith("4.57")
    assert info["limits"]["max_payload_bytes"] == 2_000_000
    listed = {m["id"] for m in httpx.get(server.url + "/models").json()}
    assert {MINILM, "tiny/zero-shot", "tiny/question-answering"} <= listed
