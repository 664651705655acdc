"""Benchmark (not a test): the speed of every candidate recipe against the PyTorch reference, on this machine.

Unlike `squeezer optimize`, which times only the candidates that pass the accuracy gate, this times all of
them, rejected ones included, so the price of accuracy is visible. Accuracy is still measured and shown.

    .venv/bin/python bench/bench_candidates.py                       # all-MiniLM-L6-v2, latency, default sweep
    .venv/bin/python bench/bench_candidates.py MODEL --profile throughput --sweep full --rounds 20
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from squeezer.artifact import versions
from squeezer.compiler import timing
from squeezer.compiler import validation_data as vd
from squeezer.compiler.build import BuildContext, Builder
from squeezer.compiler.config import OptimizeConfig
from squeezer.compiler.export import export
from squeezer.compiler.gate import Gate
from squeezer.compiler.optimize import read_model, reference_model, resolve_target, sample_feeds
from squeezer.compiler.recipes import recipes_for
from squeezer.compiler.report import render
from squeezer.compiler.select import record_timings
from squeezer.config import ModelConfig
from squeezer.hardware import hardware_fingerprint
from squeezer.sources import DEFAULT_MODEL_SPEC, resolve
from squeezer.tasks import TASKS


def say(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def bench(spec: str, config: OptimizeConfig) -> dict[str, Any]:
    """Build, gate and time every candidate; returns report-shaped data for `render`."""
    from squeezer.backends.onnx_backend import OnnxBackend

    src = resolve(spec)
    info, task = read_model(src, ModelConfig(task=config.task))
    head, target = TASKS[task].head, resolve_target(config.target)
    with tempfile.TemporaryDirectory() as scratch:
        exported = export(src.path, head, info, Path(scratch) / "exported.onnx", gguf_file=src.gguf_file)
        reference = reference_model(src, info, task, config)
        gate = Gate(reference, vd.builtin(task, info.tokenizer.mask_token), task, config.max_accuracy_loss)
        feeds = sample_feeds(info, exported)
        builder = Builder(BuildContext(exported, Path(scratch), feeds, feeds[:8], say))
        candidates, backends = [], {}
        for recipe in recipes_for(target, config.sweep, config.recipe_names()):
            say(f"building {recipe.name}")
            start = time.perf_counter()
            built = builder.build(recipe)
            backend = OnnxBackend.from_graph(built.path, head, target, config.threads, None, info.max_length, recipe.dtype)
            verdict = gate.judge(backend)
            candidates.append({
                "name": recipe.name, "dtype": recipe.dtype, "verdict": "passed" if verdict.passed else "rejected",
                "metrics": verdict.metrics, "reasons": list(verdict.failures), "size_bytes": built.path.stat().st_size,
                "build_s": round(time.perf_counter() - start, 1),
            })
            backends[recipe.name] = backend
        loads = timing.workloads(config.profile, info.tokenizer, info.max_length, "token_type_ids" in exported.inputs)
        results = timing.measure({"torch": reference.backend, **backends}, loads, config.profile, config.timing_rounds,
                                 progress=say)
    reference_timings = record_timings(candidates, results, results["torch"].score)
    fastest = min((c for c in candidates if c["verdict"] == "passed"), key=lambda c: c["timings"]["score"], default=None)
    return {"model_id": src.model_id, "task": task, "target": target, "profile": config.profile,
            "hardware": hardware_fingerprint(), "versions": versions(), "accuracy": {"budget": gate.budget, "bounds": gate.limits,
                                                  "validation": {"kind": "built-in", "examples": len(gate.plans)}},
            "reference": {"timings": reference_timings}, "candidates": candidates,
            "chosen": fastest["name"] if fastest else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL_SPEC, help="[ID=]SOURCE (default: the packaged MiniLM)")
    parser.add_argument("--task")
    parser.add_argument("--target", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--profile", default="latency", choices=("latency", "throughput"))
    parser.add_argument("--sweep", default="default", choices=("default", "full"))
    parser.add_argument("--recipes", help="comma-separated recipe names instead of the sweep")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    config = OptimizeConfig(task=args.task, profile=args.profile, sweep=args.sweep, recipes=args.recipes,
                            timing_rounds=args.rounds, threads=args.threads, target=args.target)
    data = bench(args.model, config)
    print(render(data).replace("chosen: ", "fastest passing: "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
