"""`/docs` and `/redoc` work without the internet: their scripts come from this server, not a CDN, and a real
headless browser renders every operation of the served OpenAPI document on both pages."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from squeezer.testing.server import ServerProcess

KEY = "docs-test-api-key"
BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "chrome-headless-shell")


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess([f"m={tiny_model('bert', 'base')}", "--api-key", KEY], tmp_path_factory.mktemp("docs"))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def browser() -> str:
    """A headless Chromium: SQUEEZER_TEST_BROWSER, or the first of BROWSERS on PATH."""
    found = os.environ.get("SQUEEZER_TEST_BROWSER") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if not found:
        pytest.skip("no headless Chromium: `apt-get install chromium-headless-shell` (Debian), or set "
                    "SQUEEZER_TEST_BROWSER to a Chromium or Chrome binary")
    return found


def rendered(url: str) -> str:
    """The page's DOM after its scripts ran (the browser's virtual clock runs 20 s, so fetches finish)."""
    cmd = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000", "--dump-dom", url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_pages_load_every_script_from_this_server(server: ServerProcess, page: str) -> None:
    html = httpx.get(server.url + page, timeout=30)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")  # no key needed
    assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert any(a.endswith(".js") for a in assets), html.text
    assert "cdn" not in html.text and "fonts.googleapis" not in html.text
    for asset in assets:
        assert asset.startswith("/docs/assets/"), asset
        got = httpx.get(server.url + asset, timeout=30)
        assert got.status_code == 200 and len(got.content) > 1000, asset
    assert httpx.get(server.url + "/docs/assets/nope.js", timeout=30).status_code == 404


def test_a_browser_renders_every_operation_on_both_pages(server: ServerProcess) -> None:
    document = httpx.get(server.url + "/openapi.json", timeout=30).json()
    assert document["openapi"].startswith("3.1")  # what Swagger UI 4 cannot render
    paths = set(document["paths"])
    operations = {op["operationId"] for item in document["paths"].values() for op in item.values()}
    assert len(paths) >= 10 and {"/v1/embeddings", "/embed"} <= paths
    swagger = rendered(server.url + "/docs")
    assert set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', swagger)) == paths
    redoc = rendered(server.url + "/redoc")
    assert set(re.findall(r'data-section-id="operation/([^"]+)"', redoc)) == operations

