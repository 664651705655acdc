"""`--autoscale` under real load (issue 17): Ray Serve adds a replica while clients keep more requests in flight
than --target-ongoing-requests, the new replica answers, and Ray removes it again once the load stops. The
delays and the averaging window are shortened through their flags so this runs in well under a minute."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from squeezer.ray_serve.replica import REPLICA_HEADER
from tests.helpers import until
from tests.ray.conftest import replica_pids

pytestmark = pytest.mark.ray

# Two replicas of half a CPU fit the local 2-CPU Ray beside its proxy; one ongoing request per replica is the
# target, so 8 clients ask for 8 replicas (capped at 2) as soon as Ray sees them.
AUTOSCALE = ("--autoscale", "1:2", "--target-ongoing-requests", "1", "--replica-cpus", "0.5",
             "--upscale-delay", "1", "--downscale-delay", "2", "--autoscale-window", "3")
CLIENTS = 8
BODY = {"inputs": [f"a sentence to embed, number {i}" for i in range(16)], "options": {"use_cache": False}}


def test_load_adds_a_replica_that_answers_and_its_end_removes_it(start_ray, tiny_model) -> None:
    srv = start_ray([f"m={tiny_model('bert', 'base')}"], *AUTOSCALE)
    assert len(replica_pids(srv)) == 1  # autoscaling starts at its minimum

    async def load() -> tuple[list[int], set[str]]:
        """Clients that each keep one request in flight until a second replica has answered one of them."""
        statuses: list[int] = []
        replicas: set[str] = set()
        done = asyncio.Event()

        async def client(http: httpx.AsyncClient) -> None:
            while not done.is_set():
                response = await http.post("/models/m", json=BODY)
                statuses.append(response.status_code)
                replicas.add(response.headers.get(REPLICA_HEADER, ""))

        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as http:
            clients = [asyncio.create_task(client(http)) for _ in range(CLIENTS)]
            try:
                await until(lambda: len(replicas) == 2 or any(c.done() for c in clients), 45, every=0.2)
            finally:
                done.set()
                await asyncio.gather(*clients)
        return statuses, replicas

    statuses, replicas = asyncio.run(load())
    assert len(replicas) == 2, replicas  # the replica Ray added answered
    assert set(statuses) == {200}, sorted(set(statuses))  # and nothing failed while it joined
    assert len(replica_pids(srv)) == 2

    asyncio.run(until(lambda: len(replica_pids(srv)) == 1, 45, every=0.5))  # no load: back to the minimum
    answered = {httpx.post(srv.url + "/models/m", json=BODY, timeout=30).headers[REPLICA_HEADER] for _ in range(6)}
    assert len(answered) == 1 and answered <= replicas, answered
