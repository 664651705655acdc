"""The chat load generator: concurrent OpenAI chat streams, each client sending its next request when the last
answer ends, measuring time to first token, each answer's decode rate and new tokens per second in aggregate.

wrk cannot read a stream's first token, so this one is Python (httpx); at chat's request rates (a few per second)
the client's own cost is small. Requests begun before the deadline run to their end, so a rung slower than the
duration (the pipeline without its cache) still completes one answer per client and is measured over it.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

import httpx

from squeezer.benchmark.load import Measured, closed_loop, own_cpu


@dataclass(frozen=True)
class Answer:
    """One chat request as the client saw it: latency, time to its first token, new tokens, decode rate."""

    latency_ms: float
    ttft_ms: float
    tokens: int
    text: str

    @property
    def tokens_per_s(self) -> float | None:
        decoding = (self.latency_ms - self.ttft_ms) / 1000
        return (self.tokens - 1) / decoding if self.tokens > 1 and decoding > 0 else None


async def ask(http: Any, path: str, body: dict[str, Any]) -> Answer | None:
    """Post one chat request, streamed (SSE) or not (one JSON answer); None when it failed, the connection's
    failures too (reported as an error beside the figure; the run goes on). A kept-alive connection the server
    closed without answering (llama-server does, now and then) is sent again once on a new one, as HTTP clients
    do (the OpenAI SDK among them): nothing was answered, so nothing is counted twice."""
    start = time.perf_counter()
    for attempt in (1, 2):
        try:
            response = await http.send(http.build_request("POST", path, json=body), stream=True)
        except httpx.RemoteProtocolError:
            if attempt == 1:
                continue
            return None
        except httpx.TransportError:
            return None
        try:
            return await _read(response, start)
        except httpx.TransportError:
            return None
        finally:
            await response.aclose()
    return None


async def _read(response: Any, start: float) -> Answer | None:
    """One answer, from the response's first byte to its end; None for an error status or an error event."""
    first: float | None = None
    text, tokens = [], 0
    if response.status_code >= 300:
        await response.aread()
        return None
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        answer = json.loads(await response.aread())
        total = (time.perf_counter() - start) * 1000
        return Answer(total, total, answer["usage"]["completion_tokens"], answer["choices"][0]["message"]["content"])
    async for line in response.aiter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:
            return None
        for choice in chunk.get("choices", []):
            if choice.get("delta", {}).get("content"):
                first = first or time.perf_counter()
                text.append(choice["delta"]["content"])
        tokens = (chunk.get("usage") or {}).get("completion_tokens", tokens)
    end = time.perf_counter()
    # a server that sends no usage in its stream (llama-cpp-python's) streams a token per chunk: count those
    return Answer((end - start) * 1000, ((first or end) - start) * 1000, tokens or len(text), "".join(text))


def drive_chat(url: str, path: str, bodies: list[dict[str, Any]], clients: int, seconds: float) -> Measured:
    """`clients` concurrent chat clients for `seconds` (each finishing what it began), with the CPU they took."""
    return own_cpu(lambda: asyncio.run(_drive(url, path, bodies, clients, seconds)))


async def _drive(url: str, path: str, bodies: list[dict[str, Any]], clients: int, seconds: float) -> Measured:
    answers, errors, spent = await closed_loop(url, bodies, clients, seconds, lambda http, body: ask(http, path, body))
    return summary(answers, errors, spent)


def summary(answers: list[Answer], errors: int, spent: float) -> Measured:
    def cut(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else (values[0] if values else 0.0)

    latencies = [a.latency_ms for a in answers]
    rates = [r for r in (a.tokens_per_s for a in answers) if r is not None]
    return Measured(len(answers) / spent, cut(latencies, 50), cut(latencies, 90), cut(latencies, 99), errors,
                    "python (httpx streams)", sum(a.tokens for a in answers) / spent,
                    statistics.median(rates) if rates else None, cut([a.ttft_ms for a in answers], 50))
