"""Structured output's cost under load: 16 concurrent 96-token chats with a JSON schema against 16 without, on
one server, rounds interleaved (these machines drift), aggregate completion tokens/s (issue 15's target: the
constrained rate at least 80% of the plain one).

    .venv/bin/python -m bench.bench_structured [--model SPEC] [--clients 16] [--rounds 3]

The default model is SmolLM2-135M-Instruct's GGUF (fetched once from PyPI), served on PyTorch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from squeezer.testing.server import ServerProcess
from squeezer.testing.tiny_decoders import smollm2_gguf

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"}, "year": {"type": "integer"}, "genres": {"type": "array", "items": {"type": "string"}},
        "rating": {"type": "number"}, "summary": {"type": "string"},
    },
    "required": ["title", "year", "genres", "rating", "summary"], "additionalProperties": False,
}
TOPICS = ["a heist film", "a space opera", "a quiet drama", "a cooking show", "a detective story", "a musical",
          "a nature documentary", "a horror comedy"]


def body(i: int, constrained: bool, tokens: int) -> dict:
    ask = f"Invent {TOPICS[i % len(TOPICS)]} and describe it as JSON with title, year, genres, rating and summary."
    out = {"model": "m", "messages": [{"role": "user", "content": ask}], "max_tokens": tokens, "temperature": 0}
    if constrained:
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "film", "schema": SCHEMA}}
    return out


def complete_json(answer: dict) -> bool:
    """Whether a chat that ended by itself (not at max_tokens) answered a JSON object."""
    choice = answer["choices"][0]
    try:
        return choice["finish_reason"] == "stop" and isinstance(json.loads(choice["message"]["content"]), dict)
    except ValueError:
        return False


async def burst(url: str, clients: int, constrained: bool, tokens: int) -> tuple[float, int, int]:
    """(aggregate completion tokens/s, errors, finished answers that are JSON objects) for `clients` chats at once."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        start = time.perf_counter()
        answers = await asyncio.gather(*(client.post("/v1/chat/completions", json=body(i, constrained, tokens))
                                         for i in range(clients)))
        wall = time.perf_counter() - start
    ok = [a.json() for a in answers if a.status_code == 200]
    return sum(a["usage"]["completion_tokens"] for a in ok) / wall, len(answers) - len(ok), sum(map(complete_json, ok))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="MODEL spec (default: SmolLM2-135M-Instruct's GGUF)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.model is None:
        folder, name = smollm2_gguf()
        args.model = str(folder / name)
    with tempfile.TemporaryDirectory() as logs:
        srv = ServerProcess([f"m={args.model}", "--log-level", "warning"], Path(logs))
        try:
            srv.wait_ready(600)
            asyncio.run(burst(srv.url, args.clients, True, 8))  # warm-up: both paths, grammar compiled once
            asyncio.run(burst(srv.url, args.clients, False, 8))
            rates: dict[bool, list[float]] = {False: [], True: []}
            errors, finished = 0, {False: 0, True: 0}
            for _ in range(args.rounds):
                for constrained in (False, True):
                    rate, failed, json_answers = asyncio.run(burst(srv.url, args.clients, constrained, args.tokens))
                    rates[constrained].append(rate)
                    errors += failed
                    finished[constrained] += json_answers
        finally:
            srv.stop()
    plain, json_ = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"{args.clients} chats x {args.tokens} tokens, greedy, {args.rounds} interleaved rounds (median [min, max]):")
    for name, values in (("plain", rates[False]), ("JSON schema", rates[True])):
        print(f"  {name:12} {statistics.median(values):7.1f} tokens/s  [{min(values):.1f}, {max(values):.1f}]")
    print(f"  constrained / plain: {json_ / plain:.0%}   errors: {errors}")
    total = args.rounds * args.clients
    print(f"  answers that ended by themselves as a JSON object: plain {finished[False]}/{total}, "
          f"JSON schema {finished[True]}/{total} (the rest reached max_tokens mid-answer)")


if __name__ == "__main__":
    main()
