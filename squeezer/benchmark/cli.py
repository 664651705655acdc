"""`squeezer bench`: flags, the run, and the files it writes (results.json, report.md) and prints."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from squeezer.sources import DEFAULT_MODEL_SPEC

QUICK = {"concurrency": [4], "duration": 3.0, "rounds": 1}  # and the model's first workload
ROUNDS = 3  # the fewest whose median one outlying round cannot drag off; each round adds a whole sweep's time


def add_bench_parser(commands: Any) -> None:
    from squeezer.benchmark.rungs import REFERENCE, RUNGS
    from squeezer.benchmark.workloads import WORKLOADS

    bench = commands.add_parser("bench", help="Measure the speed-up ladder on this machine.",
                                description="Each rung (out of the box, squeezer on PyTorch, the compiled fp32 graph, "
                                "squeezer optimized, the runner-up runtime) and each peer found (infinity-emb, llama-server, "
                                "llama-cpp-python) served at once and driven by the same load in interleaved rounds; "
                                "answers checked against the first rung's.")
    bench.add_argument("model", nargs="?", default=DEFAULT_MODEL_SPEC.split("=", 1)[1], metavar="MODEL",
                       help="SOURCE to benchmark (default: the packaged all-MiniLM-L6-v2)")
    bench.add_argument("--workload", action="append", choices=sorted(WORKLOADS),
                       help="repeatable (default: every one the model's task fits)")
    bench.add_argument("--concurrency", action="append", type=int,
                       help="clients; repeatable (default: 1, 4, 16, 64; chat: 1, 16)")
    bench.add_argument("--duration", type=float, default=10.0, help="seconds of load per figure (default 10)")
    bench.add_argument("--rounds", type=int, default=None, metavar="N",
                       help=f"rounds per figure, interleaved across rungs (A, B, C, A, B, C, ...); each figure is their "
                       f"median, with min and max (default {ROUNDS}; --quick: {QUICK['rounds']})")
    bench.add_argument("--rung", action="append", choices=[r.name for r in RUNGS],
                       help=f"measure only these rungs; repeatable (default: every one the workloads fit; {REFERENCE}, "
                       "which every answer is checked against, always runs)")
    bench.add_argument("--peer", action="append", default=[], metavar="NAME=PATH",
                       help="run a peer from its own environment: NAME=PATH to its executable (infinity-emb, "
                       "llama-server; llama-cpp-python: its environment's python), or NAME='COMMAND ...' with "
                       "{port} (and {model}, {gguf}, {threads}, {slots}, {context}, {python}) for any OpenAI-compatible "
                       "server; repeatable. Peers on PATH run without it")
    bench.add_argument("--out", default="bench-results", help="folder for results.json and report.md")
    bench.add_argument("--quick", action="store_true",
                       help="the model's first workload at 4 clients for 3 s per rung, one round (a smoke run)")
    bench.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from squeezer.benchmark.charts import ChartsUnavailable, draw
    from squeezer.benchmark.ladder import model_task, run
    from squeezer.benchmark.peers import parse
    from squeezer.benchmark.report import markdown
    from squeezer.benchmark.workloads import fitting

    workloads = fitting(model_task(args.model))[:1] if args.quick else args.workload
    concurrency = QUICK["concurrency"] if args.quick else args.concurrency
    duration = QUICK["duration"] if args.quick else args.duration
    rounds = args.rounds if args.rounds is not None else QUICK["rounds"] if args.quick else ROUNDS
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as logs:
        try:
            results = run(args.model, workloads, concurrency, duration, Path(logs),  # type: ignore[arg-type]
                          lambda message: print(f"squeezer bench: {message}", file=sys.stderr, flush=True), rounds,
                          parse(args.peer), args.rung)
        except ValueError as exc:
            print(f"squeezer bench: {exc}", file=sys.stderr)
            return 2
    (out / "results.json").write_text(json.dumps(results, indent=1))
    report = markdown(results)
    (out / "report.md").write_text(report)
    print(report)
    try:
        charts = [str(path) for path in draw(results, out)]
    except ChartsUnavailable as exc:
        charts = [f"no charts ({exc})"]
    print(f"written: {out / 'results.json'}, {out / 'report.md'}, " + ", ".join(charts))
    return 0
