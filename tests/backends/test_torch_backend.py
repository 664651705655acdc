"""The PyTorch backend as a compilation target (issue 14): `torch-bf16` runs the reference's own weights under
bf16 autocast, is gated and timed like every candidate where the CPU has bf16 units, is skipped with the reason
where it has none, and an artifact that chose it is served from its own weights with the report's precision."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from squeezer.artifact import ArtifactError
from squeezer.backends import Batch
from squeezer.backends.torch_backend import TorchBackend
from squeezer.compiler.recipes import RECIPES
from squeezer.config import ServeConfig
from squeezer.hardware import hardware_fingerprint
from squeezer.runtime import load_runtime
from squeezer.sources import ModelSource
from tests.compiler.artifacts import build_artifact
from tests.helpers import run_direct

TEXTS = ["I loved every minute of it!", "Terrible service, never again.", "It was fine, I guess, for the price."]
HAS_BF16 = bool({"amx_bf16", "avx512_bf16"} & set(hardware_fingerprint()["cpu"]["flags"]))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_autocast_runs_the_same_weights_in_bf16_with_close_answers(tiny_model, tmp_path) -> None:
    """The candidate's weights are the reference's, saved once; bf16 autocast changes the numbers (so it really
    ran in bf16) but keeps them within the gate's reach. Autocast runs on any CPU, only slower without bf16 units."""
    reference = TorchBackend.from_weights(tiny_model("bert", "base"), "base")
    reference.save(tmp_path / "weights")
    assert (tmp_path / "weights" / "model.safetensors").is_file()
    bf16 = TorchBackend.from_weights(tmp_path / "weights", "base", precision="bf16")
    batch = Batch.pad([[101, 7, 8, 9, 102], [101, 11, 102]], None, 0)
    want, got = reference.forward(batch)["last_hidden_state"], bf16.forward(batch)["last_hidden_state"]
    assert got.dtype == np.float32 and got.shape == want.shape
    assert not np.array_equal(got, want)
    assert cosines(got, want).min() > 0.99
    assert bf16.capabilities().dtype == "bfloat16" and reference.capabilities().dtype == "float32"
    with pytest.raises(ArtifactError, match="unknown PyTorch precision 'fp8'"):
        TorchBackend.from_weights(tmp_path / "weights", "base", precision="fp8")


def test_the_torch_bf16_candidate_is_tried_only_where_the_cpu_has_bf16(tiny_model, tmp_path) -> None:
    report = build_artifact(tiny_model("bert", "sequence-classification"), tmp_path / "art", "sequence-classification",
                            recipes="fp32,torch-bf16")
    bf16 = next(c for c in report.candidates if c["name"] == "torch-bf16")
    assert bf16["runtime"] == "torch" and bf16["dtype"] == "bfloat16"
    if HAS_BF16:  # built, gated and timed like every candidate
        assert bf16["verdict"] in ("chosen", "passed", "rejected") and bf16["precision"] == "bf16" and bf16["metrics"]
        assert bf16["verdict"] == "rejected" or bf16["timings"]
    else:
        assert bf16["verdict"] == "skipped" and "bf16" in bf16["reasons"][0] and not bf16["timings"]
    recipe = next(r for r in RECIPES if r.name == "torch-bf16")
    assert "AMX or AVX-512 BF16" in (recipe.missing_features(["avx2", "fma"]) or "")
    assert recipe.missing_features(["avx2", "amx_bf16"]) is None and recipe.precision == "bf16"


@pytest.mark.skipif(not HAS_BF16, reason="a torch-bf16 artifact is only built on a CPU with bf16 units (AMX or AVX-512 "
                                          "BF16); the test above checks that it is skipped with its reason here")
@pytest.mark.parametrize("head", ["sequence-classification", "base"])
def test_a_torch_bf16_artifact_is_served_from_its_own_weights(tiny_model, load, tmp_path, head: str) -> None:
    """Chosen alone, the candidate becomes an artifact holding the weights (no source needed: it is served from a
    copy in another folder), loaded on the torch backend in bf16, answering like the fp32 reference."""
    # the gate's bound is not what this test is about: a random tiny model's token vectors in bf16 reach 0.98 only
    built = build_artifact(tiny_model("bert", head), tmp_path / "art", head, recipes="torch-bf16", max_accuracy_loss=0.05)
    moved = tmp_path / "elsewhere"
    shutil.copytree(built.path, moved)
    report = json.loads((moved / "squeezer.json").read_text())
    assert report["graph"].items() >= {"runtime": "torch", "file": "model.safetensors", "precision": "bf16", "dtype": "bfloat16"}.items()
    assert set(report["requires"]) == {"amx_bf16", "avx512_bf16"}
    runtime = load_runtime(ModelSource("m", Path(moved), artifact=True), ServeConfig())
    try:
        assert runtime.describe()["backend"] == "torch" and runtime.describe()["dtype"] == "bfloat16"
        reference = load(tiny_model("bert", head))
        for text in TEXTS:
            got, want = run_direct(runtime.model, text).output, run_direct(reference, text).output  # type: ignore[attr-defined]
            if head == "base":  # token vectors
                assert cosines(np.asarray(got, dtype=np.float32), np.asarray(want, dtype=np.float32)).min() > 0.99
            else:
                scores = {c["label"]: c["score"] for c in want[0]}
                assert {c["label"]: pytest.approx(c["score"], abs=0.02) for c in got[0]} == scores
    finally:
        runtime.close()
