"""The OpenAI and TEI embedding routes, client-specific shapes, timing headers, caches and metrics."""

from __future__ import annotations

import asyncio
import base64

import httpx
import numpy as np
import pytest

from tests.helpers import assert_close, error_message

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def test_openai_client_embeddings(server, minilm_path) -> None:
    from openai import OpenAI
    from sentence_transformers import SentenceTransformer

    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    texts = ["The quick brown fox.", "A much longer sentence about serving transformer models quickly."]
    response = client.embeddings.create(model=MINILM, input=texts)  # the client asks for base64 by default
    expected = SentenceTransformer(str(minilm_path), device="cpu").encode(texts)
    np.testing.assert_allclose([d.embedding for d in response.data], expected, atol=1e-5)
    assert [d.index for d in response.data] == [0, 1]
    assert response.usage.prompt_tokens == response.usage.total_tokens > 10
    floats = client.embeddings.create(model=MINILM, input="hello", encoding_format="float")
    short = client.embeddings.create(model=MINILM, input="hello", dimensions=8, encoding_format="float")
    assert len(short.data[0].embedding) == 8 and abs(np.linalg.norm(short.data[0].embedding) - 1) < 1e-5
    assert len(floats.data[0].embedding) == 384
    assert {m.id for m in client.models.list().data} >= {MINILM, "tiny/base"}


def test_openai_base64_is_little_endian_float32(server) -> None:
    body = {"model": MINILM, "input": "hello", "encoding_format": "base64"}
    encoded = httpx.post(server.url + "/v1/embeddings", json=body).json()["data"][0]["embedding"]
    floats = httpx.post(server.url + "/v1/embeddings", json={**body, "encoding_format": "float"}).json()
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    np.testing.assert_allclose(decoded, floats["data"][0]["embedding"], atol=1e-7)


def test_openai_embeddings_without_a_model_go_to_the_first_that_embeds(server) -> None:
    """As on every route (the README's rule, vLLM's and TEI's too): the answer names the model that answered."""
    answer = httpx.post(server.url + "/v1/embeddings", json={"input": "hello"})
    named = httpx.post(server.url + "/v1/embeddings", json={"model": MINILM, "input": "hello"})
    assert answer.status_code == 200 and answer.json()["model"] == MINILM
    assert answer.json()["data"] == named.json()["data"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"model": 5, "input": "x"}, 422, "model"),
        ({"model": MINILM}, 422, "input"),
        ({"model": MINILM, "input": []}, 422, "input"),
        ({"model": MINILM, "input": [[1, 2]]}, 422, "token-id"),
        ({"model": MINILM, "input": "x", "encoding_format": "int8"}, 422, "encoding_format"),
        ({"model": MINILM, "input": "x", "dimensions": 0}, 422, "dimensions"),
        ({"model": MINILM, "input": "x", "dimensions": 4096}, 422, "dimensions"),
        ({"model": "nope", "input": "x"}, 404, "nope"),
    ],
)
def test_openai_bad_requests(server, body, status, fragment) -> None:
    response = httpx.post(server.url + "/v1/embeddings", json=body)
    assert response.status_code == status and fragment in error_message(response)


def test_the_openai_client_reads_why_a_request_failed(server) -> None:
    """The openai client takes the reason from OpenAI's error object only; a plain `{"error": "..."}` left its
    users with "Error code: 422" and nothing else."""
    from openai import NotFoundError, OpenAI, UnprocessableEntityError

    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(UnprocessableEntityError, match="Error code: 422 - dimensions: ") as invalid:
        client.embeddings.create(model=MINILM, input="x", dimensions=0)
    with pytest.raises(NotFoundError, match="nope") as missing:
        client.embeddings.create(model="nope", input="x")
    assert (invalid.value.type, invalid.value.status_code) == ("invalid_request_error", 422)
    assert (missing.value.type, missing.value.status_code) == ("not_found_error", 404)


def test_tei_embed_and_tokenize(server) -> None:
    vectors = httpx.post(server.url + "/embed", json={"inputs": "hello world"}).json()
    assert len(vectors) == 1 and len(vectors[0]) == 384
    raw = httpx.post(server.url + "/embed", json={"inputs": ["hello world"], "normalize": False}).json()
    assert abs(np.linalg.norm(raw[0]) - 1) > 1e-3
    too_long = httpx.post(server.url + "/embed", json={"inputs": "word " * 1000})
    assert too_long.status_code == 422  # TEI does not truncate unless asked
    assert httpx.post(server.url + "/embed", json={"inputs": "word " * 1000, "truncate": True}).status_code == 200
    tokens = httpx.post(server.url + "/tokenize", json={"inputs": "Hello world"}).json()[0]
    assert [t["text"] for t in tokens] == ["[CLS]", "Hello", "world", "[SEP]"]
    assert tokens[1]["start"] == 0 and tokens[1]["stop"] == 5 and tokens[0]["special"]
    assert httpx.post(server.url + "/embed", json={"inputs": 5}).status_code == 422


def test_zero_shot_shape_follows_the_client(server) -> None:
    body = {"inputs": "A close match.", "parameters": {"candidate_labels": ["sports", "politics"]}}
    old = httpx.post(server.url + "/models/tiny/zero-shot", json=body, headers={"user-agent": "unknown/None; hf_hub/0.36.2"}).json()
    new = httpx.post(server.url + "/models/tiny/zero-shot", json=body, headers={"user-agent": "unknown/None; hf_hub/1.2.0"}).json()
    plain = httpx.post(server.url + "/models/tiny/zero-shot", json=body).json()
    assert plain == new and isinstance(new, list) and set(new[0]) == {"label", "score"}
    assert old["sequence"] == "A close match." and old["labels"] == [r["label"] for r in new]


def test_timing_headers_and_result_cache(server) -> None:
    body = {"inputs": "a sentence only this test sends"}
    first = httpx.post(server.url + f"/models/{MINILM}", json=body)
    again = httpx.post(server.url + f"/models/{MINILM}", json=body)
    bypass = httpx.post(server.url + f"/models/{MINILM}", json={**body, "options": {"use_cache": False}})
    assert first.headers["x-squeezer-cache"] == "miss" and again.headers["x-squeezer-cache"] == "hit"
    assert bypass.headers["x-squeezer-cache"] == "miss"
    assert first.json() == again.json()
    assert_close(bypass.json(), first.json())
    for name in ("x-total-time", "x-queue-time", "x-tokenization-time", "x-inference-time"):
        assert float(first.headers[name]) >= 0
    assert float(first.headers["x-inference-time"]) > 0


def test_metrics_are_prometheus_text(server) -> None:
    httpx.post(server.url + f"/models/{MINILM}", json={"inputs": "metrics please"})
    httpx.post(server.url + "/models/nope", json={"inputs": "x"})
    text = httpx.get(server.url + "/metrics").text
    for name in (
        "squeezer_requests_total",
        "squeezer_request_errors_total{status=\"404\"}",
        "squeezer_request_duration_seconds_bucket{le=\"0.005\",phase=\"queue\"}",
        "squeezer_batch_size_bucket",
        "squeezer_batch_tokens_bucket",
        f'squeezer_queue_depth{{model="{MINILM}"}}',
        'squeezer_cache_hits_total{cache="result"}',
        'squeezer_cache_misses_total{cache="tokens"}',
        "squeezer_models_loaded",
    ):
        assert name in text, name


async def test_concurrent_mixed_lengths_match_one_by_one(server) -> None:
    words = "serving transformer models fast needs batching and careful padding".split()
    texts = [" ".join(words[: 1 + i % len(words)] * (1 + i % 5)) + f" #{i}" for i in range(48)]
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        singles = [
            (await client.post(f"/models/{MINILM}", json={"inputs": t, "options": {"use_cache": False}})).json()
            for t in texts
        ]
        requests = [client.post(f"/models/{MINILM}", json={"inputs": t, "options": {"use_cache": False}}) for t in texts]
        together = [r.json() for r in await asyncio.gather(*requests)]
        listed = (await client.post(f"/models/{MINILM}", json={"inputs": texts, "options": {"use_cache": False}})).json()
    assert_close(together, singles)
    assert_close(listed, singles)
