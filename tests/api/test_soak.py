"""Soak (issue 13): a minute of mixed traffic against one real server, many clients at once.

Embeddings and greedy generations (plain and streamed, some streams dropped mid-way, some requests abandoned
by their client) interleaved with hostile requests. Every request that is answered gets exactly the reference
answer (computed one at a time before the soak), hostile ones get a 4xx, nothing gets a 5xx; afterwards the
queues are empty, the server still answers, and its memory is within a stated margin of what it held after
warm-up.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from squeezer.testing.server import ServerProcess, metric

pytestmark = pytest.mark.soak
SECONDS = 45.0
CLIENTS = 24
RSS_MARGIN_MB = 200  # caches fill up during the soak (results, tokens); anything past this is a leak
TEXTS = [f"sentence number {i} about {'cats' if i % 2 else 'the weather'} and more" for i in range(12)]
PROMPTS = ["Once upon a time", "The capital of France", "Numbers like 42", "Hello there"]
GREEDY = {"max_new_tokens": 8, "do_sample": False}
HOSTILE: list[tuple[str, dict[str, Any]]] = [
    ("/generate", {"inputs": "x", "parameters": {"temperature": -1}}),
    ("/generate", {"inputs": "x", "parameters": {"stop": ["y" * 999]}}),
    ("/models/emb", {"inputs": "x", "parameters": {"truncate": "no"}}),
    ("/v1/chat/completions", {"model": "chat", "messages": [{"role": "wizard", "content": "x"}]}),
    ("/embed", {"inputs": []}),
    ("/v1/chat/completions", {"model": "chat", "messages": [{"role": "user", "content": "x"}], "n": 99}),
]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model, tiny_decoder_path):
    proc = ServerProcess([f"emb={tiny_model('bert', 'base')}", f"chat={tiny_decoder_path('llama')}"],
                         tmp_path_factory.mktemp("soak"))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


async def references(client: httpx.AsyncClient) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Each input's answer alone, before the soak: what every answer under load must equal."""
    vectors = {}
    for text in TEXTS:
        response = await client.post("/models/emb", json={"inputs": text, "options": {"use_cache": False}})
        vectors[text] = response.json()
    texts = {}
    for prompt in PROMPTS:
        response = await client.post("/generate", json={"model": "chat", "inputs": prompt, "parameters": GREEDY})
        texts[prompt] = response.json()["generated_text"]
    return vectors, texts


async def one_client(client: httpx.AsyncClient, seed: int, deadline: float, expected: tuple[dict, dict],
                     tally: Counter[str], problems: list[str]) -> None:
    rng = random.Random(seed)
    vectors, texts = expected
    while time.monotonic() < deadline:
        kind = rng.choice(["embed", "embed", "generate", "stream", "drop", "abandon", "hostile"])
        response: httpx.Response | None = None
        try:
            if kind == "embed":
                text = rng.choice(TEXTS)
                response = await client.post("/models/emb", json={"inputs": text, "options": {"use_cache": rng.random() < 0.5}})
                ok = response.status_code == 200 and np.allclose(response.json(), vectors[text], atol=1e-5)
            elif kind == "generate":
                prompt = rng.choice(PROMPTS)
                response = await client.post("/generate", json={"model": "chat", "inputs": prompt, "parameters": GREEDY})
                ok = response.status_code == 200 and response.json()["generated_text"] == texts[prompt]
            elif kind in ("stream", "drop"):
                prompt, text, events = rng.choice(PROMPTS), "", 0
                body = {"model": "chat", "inputs": prompt, "parameters": GREEDY}
                async with client.stream("POST", "/generate_stream", json=body) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data:"):
                            events += 1
                            text += httpx.Response(200, content=line[5:]).json()["token"]["text"]
                            if kind == "drop" and events == 2:
                                break
                ok = response.status_code == 200 and (kind == "drop" or text == texts[prompt])
            elif kind == "abandon":  # the client gives up almost at once: its work must be dropped, not answered late
                try:
                    await client.post("/generate", json={"model": "chat", "inputs": rng.choice(PROMPTS), "parameters": GREEDY},
                                      timeout=0.02)
                except httpx.TimeoutException:
                    pass
                ok = True
            else:
                route, body = rng.choice(HOSTILE)
                response = await client.post(route, json=body)
                ok = 400 <= response.status_code < 500
                if response.status_code == 429:  # back-pressure is an answer too, not a failure
                    ok = True
        except httpx.TransportError as exc:
            ok = False
            problems.append(f"{kind}: {exc!r}")
        tally[kind] += 1
        if not ok:
            problems.append(f"{kind}: wrong answer ({response.status_code if response else 'none'})")


def test_mixed_traffic_is_answered_exactly_and_leaves_nothing_behind(server) -> None:
    async def soak() -> tuple[Counter[str], list[str], float]:
        limits = httpx.Limits(max_connections=CLIENTS + 4)
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
            expected = await references(client)
            for _ in range(3):  # warm-up: every path once, so RSS after it includes what serving needs
                await asyncio.gather(*(one_client(client, 1000 + i, time.monotonic() + 2, expected, Counter(), [])
                                       for i in range(4)))
            warm = rss_mb(server.proc.pid)
            tally: Counter[str] = Counter()
            problems: list[str] = []
            deadline = time.monotonic() + SECONDS
            await asyncio.gather(*(one_client(client, i, deadline, expected, tally, problems) for i in range(CLIENTS)))
            return tally, problems, warm

    tally, problems, warm = asyncio.run(soak())
    assert not problems, problems[:10]
    assert sum(tally.values()) > 200 and all(tally[k] for k in ("embed", "generate", "stream", "drop", "abandon", "hostile"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # abandoned work drains: every queue comes back to empty
        text = httpx.get(server.url + "/metrics").text
        if all(metric(text, "squeezer_queue_depth", model=m) == 0 for m in ("emb", "chat")) and \
                metric(text, "squeezer_generation_occupancy", model="chat") == 0:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"queues did not empty:\n{text}")
    assert httpx.post(server.url + "/models/emb", json={"inputs": TEXTS[0]}).status_code == 200
    after = rss_mb(server.proc.pid)
    print(f"soak: {dict(tally)} requests in {SECONDS:g}s by {CLIENTS} clients; RSS {warm:.0f} -> {after:.0f} MB")
    assert after < warm + RSS_MARGIN_MB, f"RSS grew from {warm:.0f} MB to {after:.0f} MB during the soak"
