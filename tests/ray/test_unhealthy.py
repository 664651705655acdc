"""One of two replicas fails its health check (issue 17): a model it reloads from storage that has gone bad fails
there, its `check_health` raises, and Ray takes that replica out of rotation and replaces it; every request
meanwhile is answered, from the moment it is out by the healthy replica alone, and a replacement that cannot load
the model is kept out too. Once the storage is mended, a replacement loads and joins."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx
import pytest

from squeezer.ray_serve.replica import REPLICA_HEADER
from tests.helpers import until
from tests.ray.conftest import replica_pids, until_both_routed

pytestmark = pytest.mark.ray

WEIGHTS = "model.safetensors"
BODY = {"inputs": "hello there", "options": {"use_cache": False}}


def test_a_replica_whose_model_fails_is_kept_out_while_the_other_answers(start_ray, tiny_model, tmp_path: Path) -> None:
    flaky = tmp_path / "flaky"
    shutil.copytree(tiny_model("bert", "base"), flaky)
    srv = start_ray([f"enc={tiny_model('bert', 'base')}", f"flaky={flaky}"])
    pids = set(replica_pids(srv))
    assert len(pids) == 2
    seen = until_both_routed(srv)

    # The storage goes bad; one replica unloads `flaky` and loading it again fails there (only there: the other
    # keeps the copy it loaded, so a load it is asked for is already done).
    (flaky / WEIGHTS).rename(tmp_path / WEIGHTS)
    unloaded = httpx.post(srv.url + "/models/flaky/unload", timeout=30)
    assert unloaded.status_code == 200 and unloaded.json()["state"] == "unloaded", unloaded.text
    sick = unloaded.headers[REPLICA_HEADER]
    (healthy,) = seen - {sick}

    def failed_on_the_sick_one() -> bool:
        loaded = httpx.post(srv.url + "/models/flaky/load", timeout=30)
        return loaded.headers[REPLICA_HEADER] == sick and loaded.json()["state"] == "failed"

    asyncio.run(until(failed_on_the_sick_one, 30, every=0.1))

    async def traffic() -> tuple[list[tuple[float, int, str]], float, set[int]]:
        """(when, status, replica) of every `enc` request, 4 at a time, from the failure until 10 s after Ray has
        taken the sick replica away (its process is gone); when that was; the replacements started meanwhile
        (which fail to load `flaky` too)."""
        answers: list[tuple[float, int, str]] = []
        replacements: set[int] = set()
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as http:
            async def ask() -> None:
                response = await http.post("/models/enc", json=BODY)
                answers.append((time.monotonic(), response.status_code, response.headers.get(REPLICA_HEADER, "")))

            async def removed() -> bool:
                await asyncio.gather(*(ask() for _ in range(4)))
                return not pids <= set(replica_pids(srv))

            await until(removed, 90, every=0.05)
            out = time.monotonic()
            while time.monotonic() - out < 10:
                await asyncio.gather(*(ask() for _ in range(4)))
                replacements |= set(replica_pids(srv)) - pids
        return answers, out, replacements

    answers, out, replacements = asyncio.run(traffic())
    assert {status for _, status, _ in answers} == {200}, answers  # no request failed, before or after
    after = [replica for when, _, replica in answers if when > out]
    assert len(after) > 20 and set(after) == {healthy}, set(after)  # out of rotation: the healthy one answers all
    assert replacements, "Ray started no replacement"  # ... while Ray tried to replace it, in vain

    (tmp_path / WEIGHTS).rename(flaky / WEIGHTS)  # mended: the next replacement loads `flaky` and joins
    statuses: set[int] = set()
    joined: set[str] = set()

    def replaced() -> bool:
        response = httpx.post(srv.url + "/models/flaky", json=BODY, timeout=30)
        statuses.add(response.status_code)
        joined.add(response.headers[REPLICA_HEADER])
        return bool(joined - {sick, healthy})

    asyncio.run(until(replaced, 120, every=0.2))
    assert statuses == {200} and sick not in joined, (statuses, joined)
