"""No cross-client channel through caches (issue 13, item 4): each API key is a tenant, and the result cache
(`x-squeezer-cache`), the token cache and the prefix cache (`cached_tokens`) only ever hit a tenant's own entries;
`cache_salt` narrows a scope further, for clients sharing a key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from squeezer.api import create_app
from squeezer.config import ConfigError, ServeConfig, ServerConfig
from squeezer.engine import Engine
from squeezer.sources import ModelSource
from tests.api.test_decoder_artifact_serving import CHAT, artifact  # noqa: F401 (a fixture: the compiled tiny llama)
from tests.helpers import error_message

pytestmark = pytest.mark.asyncio(loop_scope="module")
ALICE, BOB = "alice-key-0001", "bob-key-000002"


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def two_tenants(tiny_model, artifact, tmp_path_factory) -> AsyncIterator[httpx.AsyncClient]:  # noqa: F811
    keys = tmp_path_factory.mktemp("keys") / "keys"
    keys.write_text(f"# one key per tenant\n{ALICE}\n\n{BOB}\n")
    sources = [ModelSource("enc", tiny_model("bert", "base")), ModelSource("llm", artifact, artifact=True)]
    engine = Engine(sources, ServeConfig(server=ServerConfig(api_key_file=str(keys))))
    await engine.start()
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=60) as client:
        yield client
    await engine.close()


async def test_every_key_in_the_file_is_accepted(two_tenants: httpx.AsyncClient) -> None:
    for key in (ALICE, BOB):
        assert (await two_tenants.get("/models", headers=bearer(key))).status_code == 200
    assert (await two_tenants.get("/models", headers=bearer("# one key per tenant"))).status_code == 401


async def test_a_cached_answer_is_a_hit_only_for_the_tenant_that_asked(two_tenants: httpx.AsyncClient) -> None:
    body = {"inputs": "a sentence only alice sent"}

    async def cache(key: str) -> str:
        response = await two_tenants.post("/models/enc", json=body, headers=bearer(key))
        assert response.status_code == 200, response.text
        return response.headers["x-squeezer-cache"]

    assert [await cache(ALICE), await cache(ALICE), await cache(BOB), await cache(BOB)] == ["miss", "hit", "miss", "hit"]


async def test_the_token_cache_is_per_tenant(two_tenants: httpx.AsyncClient) -> None:
    """The tokenization time header would tell a cached text apart: another tenant's text is never a hit."""

    async def token_hits() -> float:
        text = (await two_tenants.get("/metrics")).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith('squeezer_cache_hits_total{cache="tokens"}'))

    texts = {"inputs": ["tokens alice tokenized", "and another one"], "options": {"use_cache": False}}
    before = await token_hits()
    assert (await two_tenants.post("/models/enc", json=texts, headers=bearer(ALICE))).status_code == 200
    assert await token_hits() == before
    assert (await two_tenants.post("/models/enc", json=texts, headers=bearer(BOB))).status_code == 200
    assert await token_hits() == before  # bob's first time: no hit on alice's tokenizations
    assert (await two_tenants.post("/models/enc", json=texts, headers=bearer(BOB))).status_code == 200
    assert await token_hits() == before + 2


async def test_cached_tokens_count_only_a_tenants_own_prompts(two_tenants: httpx.AsyncClient) -> None:
    async def cached(key: str, **extra: object) -> int:
        body = {"model": "llm", "messages": CHAT, "max_tokens": 4, "temperature": 0, **extra}
        response = await two_tenants.post("/v1/chat/completions", json=body, headers=bearer(key))
        assert response.status_code == 200, response.text
        usage = response.json()["usage"]
        assert usage["prompt_tokens"] > 4
        return usage["prompt_tokens_details"]["cached_tokens"] - usage["prompt_tokens"]  # -prompt: none; -1: all but one

    assert await cached(ALICE) < -1  # nothing cached yet
    assert await cached(ALICE) == -1  # alice's own prompt: all but its last token
    assert await cached(BOB) < -1  # the same prompt from bob: nothing of alice's
    assert await cached(BOB, cache_salt="team-x") < -1  # bob, salted: a scope of its own
    assert await cached(BOB, cache_salt="team-x") == -1
    assert await cached(BOB) == -1  # bob's unsalted entry is still there


async def test_a_bad_salt_or_key_file_is_a_clear_error(two_tenants: httpx.AsyncClient, tmp_path: Path) -> None:
    body = {"model": "llm", "messages": CHAT, "max_tokens": 1, "cache_salt": 7}
    response = await two_tenants.post("/v1/chat/completions", json=body, headers=bearer(ALICE))
    assert response.status_code == 422 and "cache_salt" in error_message(response)
    (tmp_path / "short").write_text("long-enough-key\nshort\n")
    (tmp_path / "empty").write_text("# no keys here\n\n")
    for name, message in (("short", "at least 8 characters"), ("empty", "holds no key")):
        with pytest.raises(ConfigError, match=message):
            create_app(Engine([], ServeConfig(server=ServerConfig(api_key_file=str(tmp_path / name)))))
