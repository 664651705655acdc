"""Encoder-decoder tasks through a real server: huggingface_hub's summarization/translation, text2text over httpx."""

from __future__ import annotations

import json

import httpx
import pytest
from huggingface_hub import InferenceClient

from squeezer.testing.server import ServerProcess
from squeezer.testing.tiny_seq2seq import build
from tests.helpers import error_message

TEXT = "The quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def s2s_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("s2s")
    folders = {
        "tiny/sum": build("t5", root / "sum", pipeline_tag="summarization"),
        "tiny/tr": build("bart", root / "tr", pipeline_tag="translation"),
        "tiny/t2t": build("t5", root / "t2t"),
    }
    proc = ServerProcess([f"{mid}={path}" for mid, path in folders.items()], tmp_path_factory.mktemp("s2s-logs"))
    try:
        proc.wait_ready()
        yield proc, folders
    finally:
        proc.stop()


def test_summarization_and_translation_clients(s2s_server) -> None:
    from transformers import pipeline

    proc, folders = s2s_server
    summary = InferenceClient(model=f"{proc.url}/models/tiny/sum").summarization(TEXT, generate_parameters={"max_new_tokens": 8})
    assert summary.summary_text == pipeline("summarization", model=str(folders["tiny/sum"]))(TEXT, max_new_tokens=8)[0]["summary_text"]
    translated = InferenceClient(model=f"{proc.url}/models/tiny/tr").translation(TEXT, generate_parameters={"max_new_tokens": 8})
    expected = pipeline("translation", model=str(folders["tiny/tr"]))(TEXT, max_new_tokens=8)[0]["translation_text"]
    assert translated.translation_text == expected


def test_text2text_over_http(s2s_server) -> None:
    from transformers import pipeline

    proc, folders = s2s_server
    p = pipeline("text2text-generation", model=str(folders["tiny/t2t"]))
    url = f"{proc.url}/models/tiny/t2t"
    single = httpx.post(url, json={"inputs": TEXT, "parameters": {"max_new_tokens": 6}}, timeout=60)
    assert single.status_code == 200, single.text
    assert single.json() == p(TEXT, max_new_tokens=6)
    assert single.headers["x-squeezer-task"] == "text2text-generation"
    batch = httpx.post(url, json={"inputs": [TEXT, "Paris"], "parameters": {"max_new_tokens": 6, "num_beams": 2}}, timeout=60)
    assert batch.json() == p([TEXT, "Paris"], max_new_tokens=6, num_beams=2)
    long = httpx.post(url, json={"inputs": TEXT * 20, "parameters": {"max_new_tokens": 3}}, timeout=60)
    assert long.status_code == 200 and long.headers.get("x-squeezer-truncated") == "true"
    bad = httpx.post(url, json={"inputs": TEXT, "parameters": {"num_beams": 0}}, timeout=60)
    assert bad.status_code == 422 and error_message(bad).startswith("parameters.num_beams")


def test_tgi_generation_and_streaming_on_an_encoder_decoder(s2s_server) -> None:
    from transformers import pipeline

    proc, folders = s2s_server
    p = pipeline("text2text-generation", model=str(folders["tiny/t2t"]))
    pipelined = p(TEXT, max_new_tokens=7)[0]["generated_text"]  # the model's config asks for 4 beams
    expected = p(TEXT, max_new_tokens=7, num_beams=1)[0]["generated_text"]  # TGI: one beam, greedy
    assert pipelined != expected  # else this test could not tell the two apart
    client = InferenceClient(model=f"{proc.url}/models/tiny/t2t")
    assert client.text_generation(TEXT, max_new_tokens=7) == pipelined  # the Inference API route: the pipeline
    assert "".join(client.text_generation(TEXT, max_new_tokens=7, stream=True)) == expected

    body = {"model": "tiny/t2t", "inputs": TEXT, "parameters": {"max_new_tokens": 7}}
    with httpx.stream("POST", f"{proc.url}/generate_stream", json=body, timeout=60) as response:
        events = [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]
    assert [e["index"] for e in events] == list(range(1, 8))
    assert events[-1]["generated_text"] == expected and events[-1]["details"]["finish_reason"] == "length"
    assert all(e["generated_text"] is None for e in events[:-1])
    whole = httpx.post(f"{proc.url}/generate", json={**body, "parameters": {"max_new_tokens": 7, "details": True}}, timeout=60).json()
    assert whole["generated_text"] == expected
    assert whole["details"]["generated_tokens"] == 7 and whole["details"]["finish_reason"] == "length"

    refused = httpx.post(f"{proc.url}/generate", json={**body, "parameters": {"stop": ["x"]}}, timeout=60)
    assert refused.status_code == 422 and "stop sequences" in error_message(refused)
    no_top = httpx.post(f"{proc.url}/generate", json={**body, "parameters": {"top_n_tokens": 2}}, timeout=60)
    assert no_top.status_code == 422 and "log-probabilities" in error_message(no_top)
    no_penalty = httpx.post(f"{proc.url}/generate", json={**body, "parameters": {"frequency_penalty": 1.0}}, timeout=60)
    assert no_penalty.status_code == 422 and "frequency_penalty" in error_message(no_penalty)
    too_long = httpx.post(f"{proc.url}/generate_stream", json={**body, "parameters": {"max_new_tokens": 10**6}}, timeout=60)
    assert too_long.status_code == 422 and "exceeds the limit" in error_message(too_long)
    chat = httpx.post(f"{proc.url}/v1/chat/completions", json={"model": "tiny/t2t", "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 400 and "no chat template" in error_message(chat)


def test_a_decoder_with_a_position_table_generates_no_further_than_its_positions(s2s_server) -> None:
    """BART's decoder has `max_position_embeddings` learned positions (the tiny one: MAX_INPUT), and the pipeline's
    default of 256 new tokens goes past them (an IndexError inside `generate` before): a request that names no
    length is cut to the positions on every route; one that asks for more is refused with a 422 naming the field."""
    from squeezer.testing.tiny_seq2seq import MAX_INPUT

    proc, _ = s2s_server
    url = f"{proc.url}/models/tiny/tr"
    answer = httpx.post(url, json={"inputs": TEXT}, timeout=120)
    assert answer.status_code == 200, answer.text
    streamed = httpx.post(f"{proc.url}/generate", json={"model": "tiny/tr", "inputs": TEXT, "parameters": {"details": True}},
                          timeout=120)
    assert streamed.status_code == 200, streamed.text
    assert 0 < streamed.json()["details"]["generated_tokens"] <= MAX_INPUT - 1
    for route, body in [(url, {"inputs": TEXT, "parameters": {"max_new_tokens": MAX_INPUT}}),
                        (f"{proc.url}/generate", {"model": "tiny/tr", "inputs": TEXT, "parameters": {"max_new_tokens": MAX_INPUT}})]:
        refused = httpx.post(route, json=body, timeout=60)
        assert refused.status_code == 422, refused.text
        assert error_message(refused).startswith("parameters.max_new_tokens") and "positions" in error_message(refused)
    assert httpx.post(url, json={"inputs": TEXT, "parameters": {"max_new_tokens": MAX_INPUT - 1}}, timeout=120).status_code == 200
