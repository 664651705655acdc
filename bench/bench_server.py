"""Throughput and latency of `squeezer serve` under concurrent load, next to the out-of-the-box deployment.

    .venv/bin/python -m bench.bench_server [--model SPEC] [--clients 32] [--duration 20]

Measures, in one run on this machine:
1. the in-process ceiling: the same backend on length-sorted batches of 32, no HTTP, one batch at a time
   on every core and as many at once as the backend has instances (the faster counts);
2. squeezer serving the model, driven by wrk (a C load generator: a Python one would measure itself);
3. the out-of-the-box deployment (squeezer/benchmark/baseline.py: FastAPI calling the model per request), same load.
Each request is one sentence of 8 to 48 words with `use_cache: false`, so no answer comes from a cache.
Needs Debian's `wrk`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from squeezer.benchmark import ceiling
from squeezer.benchmark.load import drive
from squeezer.benchmark.rungs import Baseline
from squeezer.benchmark.workloads import sentences
from squeezer.sources import DEFAULT_MODEL_SPEC
from squeezer.testing.server import ServerProcess


def measure(server: Any, bodies: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """A started server (squeezer, or the baseline app) under the load: warm-up, then the measured run."""
    try:
        server.wait_ready(600)
        drive(server.url, "/models/bench", bodies, args.clients, 3)  # warm-up
        return drive(server.url, "/models/bench", bodies, args.clients, args.duration).as_dict()
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL_SPEC.split("=", 1)[1], help="SOURCE to serve (folder, artifact, package:...)")
    parser.add_argument("--baseline-model", help="model SOURCE for the out-of-the-box app (default: --model)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--sentences", type=int, default=2000)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("this benchmark needs wrk: apt-get install wrk")
    spec = f"bench={args.model}"
    texts = sentences(args.sentences)
    bodies = [{"inputs": t, "options": {"use_cache": False}} for t in texts]
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        found = ceiling.best_ceiling({"as given": spec}, texts)
        top, ceilings = found["items_per_s"], found["all"]
        ours = measure(ServerProcess([spec, "--log-level", "warning"], logs), bodies, args)
        base = measure(Baseline(args.baseline_model or args.model, "feature-extraction", logs), bodies, args)
    print(f"\n{args.clients} clients, {args.duration}s, one sentence of 8-48 words per request, use_cache=false")
    print(f"{'':34} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for n, rate in ceilings.items():
        print(f"{f'in-process x32, {n}':38} {rate:8.1f}")
    for name, r in (("squeezer", ours), ("out-of-the-box (FastAPI + model)", base)):
        print(f"{name:34} {r['rps']:8.1f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['errors']:7d}")
    print(f"squeezer: {ours['rps'] / top:.0%} of the ceiling (the faster in-process line), "
          f"{ours['rps'] / base['rps']:.1f}x the out-of-the-box requests/s")


if __name__ == "__main__":
    main()
