"""`/health` says whether this server can answer; `/health?model=ID` whether one model can (issue 13).

A model reloading after an unload (or an eviction) must not take the whole replica out of a load balancer.
Loads are held at a gate (the engine's prepare step) so each state is observed, not raced.
"""

from __future__ import annotations

import asyncio
import threading

import httpx

from squeezer.api import create_app
from squeezer.engine import Engine
from squeezer.sources import ModelSource
from tests.helpers import error_message


def gated_engine(tiny_model, gate: threading.Event) -> Engine:
    def hold(source: ModelSource) -> ModelSource:
        assert gate.wait(30), "the test never opened the gate"
        return source

    folder = tiny_model("bert", "base")
    return Engine([ModelSource("a", folder), ModelSource("b", folder)], prepare=hold)


async def test_health_during_startup_and_while_one_model_reloads(tiny_model) -> None:
    gate = threading.Event()
    engine = gated_engine(tiny_model, gate)
    app = create_app(engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        await engine.start(wait=False)
        starting = await client.get("/health")
        assert starting.status_code == 503 and starting.json()["status"] == "loading"
        gate.set()
        await asyncio.wait_for(asyncio.gather(*(e.settled.wait() for e in engine.registry.entries.values())), 60)  # type: ignore[union-attr]
        assert (await client.get("/health")).status_code == 200

        await client.post("/models/a/unload")
        gate.clear()
        reloading = await client.post("/models/a", json={"inputs": "hi"})
        assert reloading.status_code == 503 and "loading" in error_message(reloading)
        health = await client.get("/health")
        assert health.status_code == 200 and health.json()["models"] == {"a": "loading", "b": "ready"}
        one = await client.get("/health", params={"model": "a"})
        assert one.status_code == 503 and one.json()["status"] == "loading"
        assert (await client.get("/health", params={"model": "b"})).status_code == 200
        assert (await client.get("/health", params={"model": "nope"})).status_code == 404
        gate.set()
        await engine.load("a")
        assert (await client.get("/health", params={"model": "a"})).status_code == 200
    await engine.close()
