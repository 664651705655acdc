"""SIGTERM under load with open streams (issue 13, items 5 and 7): the server exits within --shutdown-grace, and
every request still open when the grace runs out is answered, never cut: a stream ends with an error event and
`[DONE]`, a plain request gets a 503 that says why."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
from transformers import AutoTokenizer

from squeezer.testing.server import ServerProcess, metric
from tests.helpers import error_message

GRACE = 2


async def read_stream(client: httpx.AsyncClient, body: dict) -> list[str]:
    """The `data:` payloads of one streamed completion, in order."""
    async with client.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        return [line[len("data: "):] async for line in response.aiter_lines() if line.startswith("data: ")]


def test_sigterm_ends_open_streams_with_an_error_event_and_done(tiny_decoder_path, tmp_path) -> None:
    folder = tiny_decoder_path("gpt2")
    eos = AutoTokenizer.from_pretrained(folder).eos_token_id
    srv = ServerProcess([f"m={folder}", "--max-batch-sequences", "1", "--shutdown-grace", str(GRACE)], tmp_path)
    srv.wait_ready()
    # one slot, and each sequence runs to the context's end (EOS forbidden): most wait in the queue at SIGTERM
    body = {"model": "m", "prompt": "Once upon a time", "max_tokens": 240, "temperature": 0, "logit_bias": {str(eos): -100}}

    async def load_then_sigterm() -> tuple[list[list[str]], list[httpx.Response], float]:
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:
            streams = [asyncio.ensure_future(read_stream(client, {**body, "stream": True})) for _ in range(12)]
            plain = [asyncio.ensure_future(client.post("/v1/completions", json=body)) for _ in range(4)]
            while metric((await client.get("/metrics")).text, "squeezer_generation_waiting", model="m") < 8:
                await asyncio.sleep(0.05)  # until most requests wait behind the one slot
            srv.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            results = await asyncio.gather(*streams), await asyncio.gather(*plain)
            return results[0], results[1], time.monotonic() - signalled

    streams, plain, answered_after = asyncio.run(load_then_sigterm())
    assert srv.proc.wait(timeout=GRACE + 20) == 0, srv.logs()
    assert answered_after < GRACE + 1.5, answered_after  # answered before uvicorn's deadline, not cut by it
    interrupted = 0
    for events in streams:
        assert events[-1] == "[DONE]", events[-3:]
        last = json.loads(events[-2])
        if "error" in last:
            error = last["error"]  # OpenAI's error object, which the openai client raises with its message
            assert "shutting down" in error["message"] and (error["type"], error["code"]) == ("service_unavailable_error", 503)
            interrupted += 1
        else:
            assert last["choices"][0]["finish_reason"] == "length"
    # 16 requests of ~240 tokens on one slot outlast a 2 s grace: the slot finishes five or six in the 1.5 s before
    # open streams are ended (more on a fast machine; a run with only 5 interrupted failed a bound of 6)
    assert interrupted >= 3
    for response in plain:
        assert response.status_code in (200, 503), response.text
        if response.status_code == 503:
            assert "shutting down" in error_message(response)
