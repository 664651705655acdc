"""Ray Serve against one plain process, on this machine: throughput, and Ray's routing overhead per request.

    .venv/bin/python -m bench.bench_ray [--model SPEC] [--clients 16] [--duration 10]

Measures, each setup its own server process on loopback (started with `squeezer serve`, as users start it):
1. embedding throughput (sentences/s, MiniLM by default) of: one plain process with 2 threads; `--ray` with
   1 replica of 1 thread; `--ray` with 2 replicas of 1 thread each; same client load (asyncio + httpx, closed
   loop, `use_cache: false`) for each;
2. routing overhead: the median latency of sequential `GET /health` (a route that does no model work, so
   the replica is as good as an empty deployment) through Ray's proxy minus the plain server's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from squeezer.sources import DEFAULT_MODEL_SPEC
from squeezer.testing.server import ServerProcess

SETUPS = {
    "plain, 2 threads": ["--threads", "2"],
    "ray, 1 replica x 1 thread": ["--ray", "--replicas", "1", "--threads", "1"],
    "ray, 2 replicas x 1 thread": ["--ray", "--replicas", "2", "--threads", "1"],
}


async def throughput(url: str, model: str, clients: int, duration: float) -> float:
    """Sentences per second answered by `clients` closed-loop clients over `duration` seconds."""
    done, stop = 0, time.monotonic() + duration

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal done
        n = 0
        while time.monotonic() < stop:
            body = {"inputs": f"sentence {index} {n}: " + "the quick brown fox jumps " * (2 + n % 8), "options": {"use_cache": False}}
            response = await http.post(f"/models/{model}", json=body)
            response.raise_for_status()
            done, n = done + 1, n + 1

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    return done / duration


def health_latency(url: str, count: int = 300) -> float:
    """Median seconds of a sequential GET /health."""
    with httpx.Client(base_url=url) as http:
        for _ in range(20):
            http.get("/health")
        times = []
        for _ in range(count):
            start = time.perf_counter()
            http.get("/health")
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(spec: str, clients: int, duration: float) -> None:
    model = spec.partition("=")[0]
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as logs:
        for name, flags in SETUPS.items():
            server = ServerProcess([spec, *flags, "--shutdown-grace", "5"], Path(logs), {"RAY_USAGE_STATS_ENABLED": "0"})
            try:
                server.wait_ready(timeout=300)
                asyncio.run(throughput(server.url, model, clients, 3))  # warm-up: every replica in the proxy's view
                results[name] = (asyncio.run(throughput(server.url, model, clients, duration)), health_latency(server.url))
            finally:
                server.stop()
            print(f"{name:30s} {results[name][0]:8.1f} sentences/s   GET /health median {results[name][1] * 1e3:6.2f} ms", flush=True)
    plain, ray = results["plain, 2 threads"][1], results["ray, 1 replica x 1 thread"][1]
    print(f"Ray Serve routing overhead per request: {(ray - plain) * 1e3:.2f} ms (median, GET /health)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=f"minilm={DEFAULT_MODEL_SPEC.partition('=')[2]}")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    run(args.model, args.clients, args.duration)


if __name__ == "__main__":
    main()
