"""GPU check (run by scripts/gpu_checks.sh): optimize all-MiniLM-L6-v2 for cuda, serve the artifact on CUDA,
and check it against the PyTorch reference on the built-in validation set. Exits non-zero on any failure."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from squeezer.backends.onnx_backend import OnnxBackend
from squeezer.compiler import validation_data as vd
from squeezer.compiler.config import OptimizeConfig
from squeezer.compiler.gate import Gate
from squeezer.compiler.optimize import optimize, reference_model
from squeezer.config import BackendConfig, ModelConfig
from squeezer.loading import load_info
from squeezer.sources import DEFAULT_MODEL_SPEC, ModelSource, resolve


def main() -> int:
    with tempfile.TemporaryDirectory() as root:
        out = Path(root) / "minilm-cuda"
        config = OptimizeConfig(target="cuda", cache=False, timing_rounds=8)
        report = optimize(DEFAULT_MODEL_SPEC, out, config, progress=lambda m: print(f"  {m}", flush=True))
        print(report.table())
        failures = []
        if report.data["target"] != "cuda":
            failures.append(f"target is {report.data['target']}, not cuda")
        fp16 = report.candidate("fp16-fused-gpu")
        if fp16["verdict"] not in ("passed", "chosen") or fp16["metrics"].get("min_cosine", 0) < 0.99:
            failures.append(f"fp16-fused-gpu: {fp16['verdict']} {fp16['metrics']} {fp16['reasons']}")

        served = ModelSource("minilm", out)
        info, task = load_info(served, ModelConfig())
        backend = OnnxBackend(served, "base", ModelConfig(), BackendConfig(), info.max_length)
        if backend.capabilities().device != "cuda":
            failures.append("the artifact is not served on cuda")
        reference = reference_model(resolve(DEFAULT_MODEL_SPEC), info, task, config)
        verdict = Gate(reference, vd.builtin(task), task).judge(backend)
        print(f"served on cuda: {verdict.metrics} {'passed' if verdict.passed else verdict.failures}")
        if not verdict.passed:
            failures.append(f"served artifact fails the gate: {verdict.failures}")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
