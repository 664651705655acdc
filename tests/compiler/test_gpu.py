"""The cuda target: fp16 with ONNX Runtime's CUDA provider and IO binding. Skipped without a GPU;
`scripts/gpu_checks.sh` runs these on a GPU machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from squeezer.backends.base import Batch
from squeezer.backends.onnx_backend import OnnxBackend
from tests.compiler.artifacts import build_artifact, has_cuda

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not has_cuda(), reason="needs an NVIDIA GPU and onnxruntime-gpu")]


def test_auto_target_picks_cuda_and_fp16_candidates(tiny_model, tmp_path: Path) -> None:
    report = build_artifact(tiny_model("bert", "base"), tmp_path / "out", "base", target="auto", recipes=None)
    assert report.data["target"] == "cuda"
    names = {c["name"] for c in report.candidates}
    assert {"fp32", "fp32-fused-gpu", "fp16-fused-gpu"} <= names
    fp16 = report.candidate("fp16-fused-gpu")
    assert fp16["dtype"] == "float16" and fp16["verdict"] in ("passed", "chosen"), fp16["reasons"]


def test_cuda_backend_uses_io_binding_and_matches_cpu(tiny_model, tmp_path: Path) -> None:
    report = build_artifact(tiny_model("bert", "sequence-classification"), tmp_path / "out", "sequence-classification",
                            target="cuda", recipes="fp32,fp16-fused-gpu")
    graph = report.path / "model.onnx"
    cuda = OnnxBackend.from_graph(graph, "sequence-classification", target="cuda")
    cpu = OnnxBackend.from_graph(graph, "sequence-classification", target="cpu")
    assert cuda.capabilities().device == "cuda"
    assert "CUDAExecutionProvider" in cuda._session.get_providers()
    batch = Batch.pad([[101, 7592, 2088, 102], [101, 2088, 102]], [[0] * 4, [0] * 3], 0)
    np.testing.assert_allclose(cuda.forward(batch)["logits"], cpu.forward(batch)["logits"], atol=2e-2)
