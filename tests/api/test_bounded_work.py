"""Every client-controlled dimension of work has a limit checked before the work is done (issue 13).

In-process through the ASGI app: each hostile request gets a 4xx that names what it passed, never a 500,
and the models keep answering ordinary requests afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from squeezer.api import create_app
from squeezer.config import LimitsConfig, ServeConfig
from squeezer.engine import Engine
from squeezer.sources import ModelSource
from tests.helpers import error_message

pytestmark = pytest.mark.asyncio(loop_scope="module")
LIMITS = LimitsConfig(max_inputs=16, max_input_chars=5_000)
CHAT = [{"role": "user", "content": "Hi"}]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tiny_model, tiny_decoder_path, tiny_seq2seq_path) -> AsyncIterator[httpx.AsyncClient]:
    sources = [ModelSource("qa", tiny_model("bert", "question-answering")), ModelSource("nli", tiny_model("bert", "zero-shot")),
               ModelSource("t2t", tiny_seq2seq_path("t5")), ModelSource("chat", tiny_decoder_path("llama"))]
    engine = Engine(sources, ServeConfig(limits=LIMITS))
    app = create_app(engine)
    await engine.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", timeout=60) as http:
        yield http
    await engine.close()


def nested(depth: int) -> str:
    return '{"inputs": ' + "[" * depth + '"x"' + "]" * depth + "}"


CASES: list[tuple[str, Any, int, str]] = [
    ("/models/qa", {"inputs": {"question": "Who?", "context": "The quick brown fox jumps. " * 150},
                    "parameters": {"doc_stride": 1, "max_seq_len": 8}}, 422, "windows"),
    ("/models/nli", {"inputs": "A text", "parameters": {"candidate_labels": [f"label {i}" for i in range(129)]}}, 422,
     "candidate_labels"),
    ("/models/t2t", {"inputs": "A text", "parameters": {"num_beams": 17}}, 422, "num_beams"),
    ("/generate", {"model": "chat", "inputs": "x" * 5_001}, 422, "characters"),
    ("/v1/chat/completions", {"model": "chat", "messages": CHAT * 17}, 413, "inputs"),
    ("/v1/chat/completions", {"model": "chat", "messages": CHAT, "n": 17}, 422, "n: must be from 1 to 16"),
    ("/v1/chat/completions", {"model": "chat", "messages": CHAT, "stop": ["y" * 300]}, 422, "stop"),
    ("/v1/chat/completions", {"model": "chat", "messages": CHAT, "logit_bias": {"\u00b2": 5}}, 422, "logit_bias"),
    ("/v1/chat/completions", {"model": "chat", "messages": CHAT, "stream": True, "stream_options": "yes"}, 422,
     "stream_options"),
    ("/tokenize", {"model": "qa", "inputs": "y" * 5_001}, 422, "characters"),
    ("/tokenize", {"model": "qa", "inputs": ["y"] * 17}, 413, "inputs"),
]


@pytest.mark.parametrize(("route", "body", "status", "names"), CASES, ids=[f"{c[0]}-{c[3]}" for c in CASES])
async def test_a_request_past_a_limit_is_refused_before_the_work(client: httpx.AsyncClient, route: str, body: Any,
                                                                  status: int, names: str) -> None:
    response = await client.post(route, json=body)
    assert response.status_code == status, response.text
    assert names in error_message(response)


@pytest.mark.parametrize("route", ["/models/qa", "/v1/chat/completions", "/generate"])
async def test_json_nested_past_the_limit_is_a_400(client: httpx.AsyncClient, route: str) -> None:
    for depth in (40, 100_000):
        response = await client.post(route, content=nested(depth), headers={"content-type": "application/json"})
        assert response.status_code == 400 and "nested deeper" in error_message(response)


async def test_the_models_still_answer(client: httpx.AsyncClient) -> None:
    qa = await client.post("/models/qa", json={"inputs": {"question": "Who?", "context": "The fox jumps."}})
    chat = await client.post("/v1/chat/completions", json={"model": "chat", "messages": CHAT, "max_tokens": 3, "n": 2})
    assert qa.status_code == 200 and chat.status_code == 200 and len(chat.json()["choices"]) == 2
