"""One model-resolution rule for every dialect (`Engine.resolve`), checked in-process through the ASGI app.

Four models are served, in this order: a classifier, an embedder, an encoder-decoder and a chat LM. A request
that names no model goes to the first one that can do what its route asks, whichever are loaded; one that
names a model that cannot gets a 400, and an unknown name a 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio

from squeezer.api import create_app
from squeezer.engine import Engine
from squeezer.runtime.base import CHAT, EMBED, GENERATE, INFER, STREAM, TOKENIZE
from squeezer.sources import ModelSource
from tests.helpers import error_message

pytestmark = pytest.mark.asyncio(loop_scope="module")
ORDER = ("cls", "emb", "t2t", "chat")
FIRST = {INFER: "cls", EMBED: "emb", GENERATE: "t2t", STREAM: "t2t", CHAT: "chat", TOKENIZE: "cls"}
GREEDY = {"max_new_tokens": 4, "do_sample": False}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tiny_model, tiny_decoder_path, tiny_seq2seq_path) -> AsyncIterator[tuple[Engine, httpx.AsyncClient]]:
    folders: dict[str, Path] = {"cls": tiny_model("bert", "sequence-classification"), "emb": tiny_model("bert", "base"),
                                "t2t": tiny_seq2seq_path("t5"), "chat": tiny_decoder_path("llama")}
    engine = Engine([ModelSource(name, folders[name]) for name in ORDER])
    app = create_app(engine)
    await engine.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", timeout=60) as client:
        yield engine, client
    await engine.close()


async def post(client: httpx.AsyncClient, route: str, body: Any) -> httpx.Response:
    return await client.post(route, json=body)


@pytest.mark.parametrize("capability", list(FIRST))
async def test_the_engine_resolves_an_unnamed_model_to_the_first_that_can(served, capability: str) -> None:
    engine, _ = served
    assert engine.resolve(None, capability) == FIRST[capability]


async def test_tgi_and_the_root_answer_with_the_first_generating_model(served) -> None:
    engine, client = served
    expected = (await engine.generate("t2t", "Hello there", parameters=GREEDY)).generations[0].text
    assert (await post(client, "/generate", {"inputs": "Hello there", "parameters": GREEDY})).json()["generated_text"] == expected
    pipeline = (await engine.run("t2t", "Hello there", GREEDY)).output  # the root is the Inference API route
    assert (await post(client, "/", {"inputs": "Hello there", "parameters": GREEDY})).json() == pipeline
    named = (await engine.generate("chat", "Hello there", parameters=GREEDY)).generations[0].text
    body = {"model": "chat", "inputs": "Hello there", "parameters": GREEDY}
    assert (await post(client, "/generate", body)).json()["generated_text"] == named


async def test_openai_routes_pick_by_what_they_need(served) -> None:
    _, client = served
    chat = await post(client, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
    assert chat.status_code == 200 and chat.json()["model"] == "chat"
    completion = await post(client, "/v1/completions", {"prompt": "Hi", "max_tokens": 3, "temperature": 0})
    assert completion.status_code == 200 and completion.json()["model"] == "t2t"
    refused = await post(client, "/v1/chat/completions", {"model": "t2t", "messages": [{"role": "user", "content": "Hi"}]})
    assert refused.status_code == 400 and "no chat template" in error_message(refused)
    embeddings = await post(client, "/v1/embeddings", {"model": "emb", "input": "Hi"})
    assert embeddings.status_code == 200 and embeddings.json()["model"] == "emb"
    wrong = await post(client, "/v1/embeddings", {"model": "chat", "input": "Hi"})
    assert wrong.status_code == 400 and "cannot serve feature-extraction" in error_message(wrong)
    unknown = await post(client, "/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "Hi"}]})
    assert unknown.status_code == 404 and "nope" in error_message(unknown)


async def test_tei_embeds_with_the_first_embedder_and_tokenizes_with_the_first_model(served) -> None:
    engine, client = served
    embedded = await post(client, "/embed", {"inputs": "Hello"})
    direct = await engine.run("emb", ["Hello"], {"normalize": True, "truncate": False}, task="feature-extraction")
    assert embedded.status_code == 200 and np.allclose(embedded.json(), direct.output, atol=1e-6)
    tokens = await post(client, "/tokenize", {"inputs": "Hello"})
    spans = await engine.tokenize("cls", ["Hello"])
    assert tokens.status_code == 200 and [t["id"] for t in tokens.json()[0]] == [s.id for s in spans[0]]
    refused = await post(client, "/embed", {"model": "chat", "inputs": "Hello"})
    assert refused.status_code == 400


async def test_resolution_does_not_follow_the_load_state(served) -> None:
    """An unloaded model is still the one its requests are for: it reloads (503 meanwhile), nobody else answers."""
    engine, client = served
    assert (await client.post("/models/emb/unload")).json()["state"] == "unloaded"
    assert engine.resolve(None, EMBED) == "emb"
    answered = await post(client, "/embed", {"inputs": "Hello"})
    assert answered.status_code == 503 and "emb" in error_message(answered)
    await engine.load("emb")
    assert (await post(client, "/embed", {"inputs": "Hello"})).status_code == 200
    assert (await client.post("/models/t2t/unload")).json()["state"] == "unloaded"
    loading = await post(client, "/generate", {"inputs": "Hello there", "parameters": GREEDY})
    assert loading.status_code == 503 and "t2t" in error_message(loading)  # not the loaded chat model
    await engine.load("t2t")
