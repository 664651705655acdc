"""A replica's death: killing one loses nothing accepted by the other, and Ray replaces it (with the API key on,
enforced by each replica as by the single process)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest

from squeezer.ray_serve.replica import REPLICA_HEADER
from tests.helpers import until
from tests.ray.conftest import replica_pids, until_both_routed

pytestmark = pytest.mark.ray

KEY = "ray-test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
NO_SPECIALS = {str(i): -100 for i in range(5)}  # only the token budget ends a generation
BODY = {"inputs": "Hello there, how are", "stream": True, "parameters": {"max_new_tokens": 200, "logit_bias": NO_SPECIALS}}


async def generate(client: httpx.AsyncClient, started: asyncio.Queue[str]) -> tuple[str, int | None]:
    """One streamed generation: (its replica, tokens received), or (its replica, None) when the stream broke."""
    tokens, replica = 0, ""
    try:
        async with client.stream("POST", "/models/tiny/llama", json=BODY, headers=AUTH) as response:
            replica = response.headers.get(REPLICA_HEADER, "")
            async for line in response.aiter_lines():
                if line.startswith("data:") and '"token"' in line:
                    tokens += 1
                    if tokens == 1:
                        started.put_nowait(replica)
        return replica, tokens if response.status_code == 200 else None
    except httpx.HTTPError:
        return replica, None


def test_killing_a_replica_loses_no_request_accepted_by_the_other(start_ray, tiny_decoder_path) -> None:
    srv = start_ray([f"tiny/llama={tiny_decoder_path('llama')}"], "--api-key", KEY)
    assert httpx.post(srv.url + "/models/tiny/llama", json={"inputs": "hi"}).status_code == 401
    pids = replica_pids(srv)
    assert len(pids) == 2
    until_both_routed(srv)

    async def scenario() -> list[tuple[str, int | None]]:
        started: asyncio.Queue[str] = asyncio.Queue()
        async with httpx.AsyncClient(base_url=srv.url, timeout=120) as client:
            tasks = [asyncio.create_task(generate(client, started)) for _ in range(24)]
            seen: set[str] = set()
            while len(seen) < 2:  # both replicas are streaming accepted requests: now kill one of them
                seen.add(await asyncio.wait_for(started.get(), timeout=60))
            os.kill(pids[0], signal.SIGKILL)
            return list(await asyncio.gather(*tasks))

    results = asyncio.run(scenario())
    survivors = {replica for replica, tokens in results if tokens == 200}
    assert len(survivors) == 1, results  # one replica finished every stream it had accepted ...
    survivor = survivors.pop()
    assert all(tokens == 200 for replica, tokens in results if replica == survivor), results  # ... all of them
    assert httpx.post(srv.url + "/models/tiny/llama", json={"inputs": "hi"}, headers=AUTH).status_code == 200

    def replaced() -> bool:  # Ray starts a new replica in place of the dead one
        live = replica_pids(srv)
        return len(live) == 2 and pids[0] not in live

    asyncio.run(until(replaced, 120, every=0.5))


def test_multiplexing_routes_each_model_to_the_replica_holding_it(start_ray, tiny_model, tiny_decoder_path) -> None:
    """One model per replica (--models-per-replica 1): once each model is loaded somewhere, its requests all go
    to the replica that holds it, found by the body's or the path's model name."""
    srv = start_ray([f"enc={tiny_model('bert', 'base')}", f"tiny/llama={tiny_decoder_path('llama')}"], "--models-per-replica", "1")
    requests = {
        "enc": ("/models/enc", {"inputs": "hello"}),
        "tiny/llama": ("/v1/completions", {"model": "tiny/llama", "prompt": "Hello", "max_tokens": 3}),
    }
    for path, body in requests.values():  # each model loads on one replica
        assert httpx.post(srv.url + path, json=body, timeout=60).status_code == 200
    holders: dict[str, set[str]] = {name: set() for name in requests}
    for _ in range(6):
        for name, (path, body) in requests.items():
            response = httpx.post(srv.url + path, json=body, timeout=60)
            assert response.status_code == 200, response.text
            holders[name].add(response.headers[REPLICA_HEADER])
    assert all(len(replicas) == 1 for replicas in holders.values()), holders
    assert httpx.post(srv.url + "/models/nope", json={"inputs": "x"}).status_code == 404
    # A stream streams through the router: its 200 token events arrive over the generation, not all at its end.
    start, arrivals = time.monotonic(), []
    with httpx.stream("POST", srv.url + "/models/tiny/llama", json=BODY, timeout=120) as response:
        assert response.status_code == 200 and response.headers[REPLICA_HEADER] in holders["tiny/llama"]
        arrivals = [time.monotonic() for line in response.iter_lines() if '"token"' in line]
    assert len(arrivals) == 200
    assert arrivals[-1] - arrivals[0] > 0.25 * (arrivals[-1] - start), (start, arrivals[0], arrivals[-1])
