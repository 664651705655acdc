"""Who may call what (issue 13): the API key on every route from the app's own route table, the admin key for
load and unload, the key read from a file, the Host and Origin guard, and /info keeping paths private."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from starlette.routing import Route

from squeezer.api import create_app
from squeezer.config import ConfigError, ServeConfig, ServerConfig
from squeezer.engine import Engine
from squeezer.sources import ModelSource
from tests.helpers import error_message

pytestmark = pytest.mark.asyncio(loop_scope="module")
KEY, ADMIN = "api-key-for-tests", "admin-key-for-tests"
OPEN = {"/health", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}  # no key, by design


async def serving(folder: Path, **server: object) -> tuple[Engine, httpx.AsyncClient]:
    engine = Engine([ModelSource("m", folder)], ServeConfig(server=ServerConfig(**server)))  # type: ignore[arg-type]
    app = create_app(engine)
    await engine.start()
    return engine, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", timeout=60)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def keyed(tiny_model) -> AsyncIterator[tuple[Engine, httpx.AsyncClient]]:
    engine, client = await serving(tiny_model("bert", "base"), api_key=KEY, admin_key=ADMIN)
    async with client:
        yield engine, client
    await engine.close()


def flatten(routes: list) -> list[Route]:
    """Every route of the app, through the routers it includes (FastAPI wraps each included router)."""
    out: list[Route] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        out.extend(flatten(inner.routes) if inner is not None else [route] if isinstance(route, Route) else [])
    return out


def concrete(path: str) -> str:
    """A route template made callable: every parameter becomes the served model's id."""
    return re.sub(r"\{[^}]+\}", "m", path)


async def test_every_route_but_the_open_ones_needs_the_key(keyed) -> None:
    """Read from the app's route table, so a route added later cannot slip through unguarded."""
    engine, client = keyed
    app = client._transport.app  # type: ignore[attr-defined]
    routes = [(method, r.path) for r in flatten(app.routes) for method in (r.methods or ()) if method != "HEAD"]
    guarded = [(m, p) for m, p in routes if p not in OPEN]
    assert len(guarded) >= 12 and {p for _, p in routes} >= {"/health", "/metrics"}
    for method, path in guarded:
        response = await client.request(method, concrete(path), json={"inputs": "x"})
        assert response.status_code == 401, (method, path, response.status_code)
        wrong = await client.request(method, concrete(path), json={"inputs": "x"}, headers={"authorization": "Bearer nope-nope"})
        assert wrong.status_code == 401, (method, path)
    for path in ("/health", "/metrics"):
        assert (await client.get(path)).status_code == 200


async def test_load_and_unload_need_the_admin_key(keyed) -> None:
    _, client = keyed
    user, admin = {"authorization": f"Bearer {KEY}"}, {"authorization": f"Bearer {ADMIN}"}
    refused = await client.post("/models/m/unload", headers=user)
    assert refused.status_code == 403 and "admin key" in error_message(refused)
    assert (await client.post("/models/m", json={"inputs": "x"}, headers=user)).status_code == 200
    unloaded = (await client.post("/models/m/unload", headers=admin)).json()
    loaded = (await client.post("/models/m/load", headers=admin)).json()
    assert unloaded["state"] == "unloaded" and loaded["state"] == "ready"
    for answer in (unloaded, loaded):  # named as /info names it: no path of the server's
        assert answer["source"] and "/" not in answer["source"], answer
    assert (await client.post("/models/m", json={"inputs": "x"}, headers=admin)).status_code == 200


async def test_info_names_sources_without_their_paths(keyed, tiny_model) -> None:
    _, client = keyed
    info = (await client.get("/info", headers={"authorization": f"Bearer {KEY}"})).json()
    assert info["auth"] and info["models"][0]["source"] == tiny_model("bert", "base").name
    engine, shown = await serving(tiny_model("bert", "base"), show_paths=True)
    async with shown:
        assert (await shown.get("/info")).json()["models"][0]["source"] == str(tiny_model("bert", "base"))
    await engine.close()


async def test_the_key_can_come_from_a_file(tiny_model, tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY + "\n")
    engine, client = await serving(tiny_model("bert", "base"), api_key_file=str(tmp_path / "key"))
    async with client:
        assert (await client.get("/models")).status_code == 401
        assert (await client.get("/models", headers={"authorization": f"Bearer {KEY}"})).status_code == 200
    await engine.close()
    with pytest.raises(ConfigError, match="not both"):
        ServerConfig(api_key=KEY, api_key_file=str(tmp_path / "key"))


async def test_web_pages_and_rebound_names_are_refused(tiny_model) -> None:
    """Without a key, a server on loopback still refuses what only a browser sends: a foreign Origin, or a
    Host name rebound to 127.0.0.1."""
    engine, client = await serving(tiny_model("bert", "base"))
    async with client:
        page = await client.post("/models/m", json={"inputs": "x"}, headers={"origin": "https://evil.example"})
        assert page.status_code == 403 and "cors-origins" in error_message(page)
        rebound = await client.post("/models/m", json={"inputs": "x"}, headers={"host": "evil.example:8000"})
        assert rebound.status_code == 403 and "allowed-hosts" in error_message(rebound)
        openai_page = await client.post("/v1/embeddings", json={"input": "x"}, headers={"origin": "https://evil.example"})
        assert openai_page.status_code == 403 and "cors-origins" in error_message(openai_page)  # OpenAI's error object
        assert (await client.post("/models/m", json={"inputs": "x"}, headers={"host": "localhost:8000"})).status_code == 200
        assert (await client.post("/models/m", json={"inputs": "x"})).status_code == 200
    await engine.close()
    engine, client = await serving(tiny_model("bert", "base"), cors_origins="https://app.example", allowed_hosts="api.example")
    async with client:
        ok = await client.post("/models/m", json={"inputs": "x"}, headers={"origin": "https://app.example", "host": "api.example"})
        assert ok.status_code == 200
        assert (await client.post("/models/m", json={"inputs": "x"})).status_code == 403  # 127.0.0.1 is not listed now
    await engine.close()
