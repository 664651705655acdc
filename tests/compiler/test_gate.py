"""The accuracy gate: generic over tasks, every failure collected, a deliberately broken candidate rejected."""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from squeezer.backends.base import Batch
from squeezer.compiler import build, recipes
from squeezer.compiler import validation_data as vd
from squeezer.compiler.gate import DEFAULT_BUDGET, FAMILIES, TOLERANCES, Bound, Gate
from squeezer.compiler.recipes import Recipe
from tests.compiler.artifacts import TASK_OF_HEAD, build_artifact


class Distorted:
    """A real backend whose outputs are pushed away from the reference: what a broken graph looks like."""

    def __init__(self, backend: Any, scale: float) -> None:
        self.backend, self.scale = backend, scale

    def forward(self, batch: Batch) -> dict[str, np.ndarray]:
        out = self.backend.forward(batch)
        rng = np.random.default_rng(0)
        return {k: (v + self.scale * rng.standard_normal(v.shape).astype(np.float32) * v.std()) for k, v in out.items()}


@pytest.mark.parametrize("head", list(TASK_OF_HEAD))
def test_gate_passes_the_reference_and_rejects_a_distorted_copy(head: str, tiny_model, load) -> None:
    task = TASK_OF_HEAD[head]
    model = load(tiny_model("bert", head), task)
    gate = Gate(model, vd.builtin(task, model.info.tokenizer.mask_token), task)
    same = gate.judge(model.backend)
    assert same.passed and same.failures == ()
    assert all(v == pytest.approx(1.0) or v == pytest.approx(0.0, abs=1e-6) for v in same.metrics.values())
    broken = gate.judge(Distorted(model.backend, 3.0))
    assert not broken.passed
    family = FAMILIES[task][0]
    assert set(broken.metrics) == {b.metric for b in gate.bounds} <= {b.metric for b in TOLERANCES[family]}
    assert broken.failures and all(any(m in f for m in broken.metrics) for f in broken.failures)


def test_every_failure_is_reported_with_numbers(tiny_model, load) -> None:
    model = load(tiny_model("bert", "base"))
    gate = Gate(model, vd.builtin("feature-extraction"), "feature-extraction")
    verdict = gate.judge(Distorted(model.backend, 2.0))
    assert [f.split()[0] for f in verdict.failures] == ["min_cosine", "mean_cosine", "token_min_cosine"]
    assert "< 0.9900" in verdict.failures[0] and "< 0.9975" in verdict.failures[1] and "< 0.9900" in verdict.failures[2]
    assert gate.limits == {"min_cosine": ">= 0.9900", "mean_cosine": ">= 0.9975", "token_min_cosine": ">= 0.9900"}


class OneTokenAstray:
    """A real backend that turns one token of each sequence off its direction (cosine 0.97):
    the mean over the sentence barely moves, the token's own vector, which feature-extraction serves, does."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def forward(self, batch: Batch) -> dict[str, np.ndarray]:
        out = dict(self.backend.forward(batch))
        hidden = out["last_hidden_state"].copy()
        v = hidden[:, 1, :]
        noise = np.random.default_rng(0).standard_normal(v.shape).astype(np.float32)
        noise -= (noise * v).sum(-1, keepdims=True) / (v * v).sum(-1, keepdims=True) * v  # orthogonal to v
        noise *= np.linalg.norm(v, axis=-1, keepdims=True) / np.linalg.norm(noise, axis=-1, keepdims=True)
        hidden[:, 1, :] = 0.97 * v + np.sqrt(1 - 0.97**2) * noise
        out["last_hidden_state"] = hidden
        return out


def test_token_embeddings_are_gated_token_by_token_where_they_are_served(tiny_model, load, tmp_path: Path) -> None:
    """A model without pooling answers feature-extraction with every token's vector, so one token gone astray is
    rejected though the pooled cosines pass; a model with sentence-transformers pooling serves only the pooled
    vector, and no token bound applies to it."""
    model = load(tiny_model("bert", "base"))
    gate = Gate(model, vd.builtin("feature-extraction"), "feature-extraction")
    verdict = gate.judge(OneTokenAstray(model.backend))
    assert verdict.metrics["min_cosine"] >= 0.99 and verdict.metrics["token_min_cosine"] == pytest.approx(0.97, abs=1e-3)
    assert [f.split()[0] for f in verdict.failures] == ["token_min_cosine"]
    pooled = tmp_path / "pooled"
    shutil.copytree(tiny_model("bert", "base"), pooled)
    (pooled / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (pooled / "1_Pooling").mkdir()
    (pooled / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    model = load(pooled)
    assert model.info.pooling is not None
    gate = Gate(model, vd.builtin("feature-extraction"), "feature-extraction")
    assert list(gate.limits) == ["min_cosine", "mean_cosine"] and gate.judge(OneTokenAstray(model.backend)).passed


def test_budget_scales_every_bound() -> None:
    assert Bound("min_cosine", True, 1.0).limit(0.02) == pytest.approx(0.98)
    assert Bound("max_prob_diff", False, 2.5).limit(0.02) == pytest.approx(0.05)
    assert Bound("x", True, 1.0).violation(0.97, 0.02) == "x 0.9700 < 0.9800"
    assert Bound("x", False, 1.0).violation(0.01, 0.02) is None
    assert set(DEFAULT_BUDGET) == set(FAMILIES)


@dataclass(frozen=True)
class Scramble:
    """A test-only step: shuffle the largest weight matrix, as a buggy transform would."""

    seed: int = 0


def scramble(step: Scramble, prev: build.Built, dst: Path, ctx: build.BuildContext) -> build.Built:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(prev.path))
    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)) if len(t.dims) == 2 else 0)
    array = numpy_helper.to_array(biggest).copy()
    np.random.default_rng(step.seed).shuffle(array.reshape(-1))
    biggest.CopyFrom(numpy_helper.from_array(array, biggest.name))
    onnx.save(model, str(dst))
    return build.Built(dst, prev.fusions, prev.kept_float)


def test_optimize_rejects_a_broken_candidate_and_says_why(tiny_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = Recipe("broken", (recipes.Fuse(), Scramble()), note="deliberately wrong")
    monkeypatch.setattr(recipes, "RECIPES", (*recipes.RECIPES, broken))
    monkeypatch.setitem(build.BUILDERS, Scramble, scramble)
    report = build_artifact(tiny_model("bert", "base"), tmp_path / "out", "base", recipes="fp32,broken")
    bad = report.candidate("broken")
    assert bad["verdict"] == "rejected" and bad["metrics"]["min_cosine"] < 0.99
    assert bad["reasons"][0].startswith("min_cosine ") and "< 0.9900" in bad["reasons"][0]
    assert bad["recipe"]["steps"][1] == {"kind": "Scramble", "seed": 0}
    assert not bad["timings"]  # rejected candidates are not timed
    assert report.data["chosen"] == "fp32"
    assert "broken: rejected: min_cosine" in report.table()


def test_optimize_fails_clearly_when_nothing_passes(tiny_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from squeezer.compiler.select import NoCandidateError

    monkeypatch.setattr(recipes, "RECIPES", (*recipes.RECIPES, Recipe("broken", (Scramble(),))))
    monkeypatch.setitem(build.BUILDERS, Scramble, scramble)
    with pytest.raises(NoCandidateError, match=r"no candidate passed the accuracy gate: broken: rejected \(min_cosine"):
        build_artifact(tiny_model("bert", "base"), tmp_path / "out", "base", recipes="broken")
    assert not (tmp_path / "out").exists()


def test_validation_file_lines(tmp_path: Path) -> None:
    file = tmp_path / "val.txt"
    lines = ["plain text", '"a JSON string"', "42", '{"inputs": "with params", "parameters": {"top_k": 2}}', "",
             json.dumps({"question": "Who?", "context": "Me."})]
    file.write_text("\n".join(lines))
    examples = vd.from_file(file, "feature-extraction")
    expected = ["plain text", "a JSON string", "42", "with params", {"question": "Who?", "context": "Me."}]
    assert [e.inputs for e in examples] == expected
    assert examples[3].parameters == {"top_k": 2}
    zero_shot = vd.from_file(file, "zero-shot-classification")
    assert zero_shot[0].parameters["candidate_labels"] == list(vd.ZERO_SHOT_LABELS)


def test_validation_file_drives_the_gate(tiny_model, tmp_path: Path) -> None:
    file = tmp_path / "val.txt"
    file.write_text("first text\nsecond, longer text with numbers 1 2 3\n")
    report = build_artifact(tiny_model("bert", "base"), tmp_path / "out", "base", validation_data=str(file), recipes="fp32")
    assert report.data["accuracy"]["validation"] | {"hash": None} == {"kind": "file", "examples": 2, "hash": None}


def test_unusable_validation_example_names_its_line(tiny_model, tmp_path: Path) -> None:
    file = tmp_path / "val.txt"
    file.write_text("Paris is the [MASK] of France.\nno mask here\n")
    with pytest.raises(ValueError, match="validation example 2 cannot be used for fill-mask: inputs: must contain the mask"):
        build_artifact(tiny_model("bert", "masked-lm"), tmp_path / "out", "masked-lm", validation_data=str(file))


def test_builtin_sets_vary(tiny_model) -> None:
    texts = vd.builtin("feature-extraction")
    lengths = sorted(len(str(e.inputs)) for e in texts)
    assert lengths[0] < 5 and lengths[-1] > 400 and len(texts) >= 30
    assert any(any(ord(ch) > 0x3000 for ch in str(e.inputs)) for e in texts)  # CJK
    assert any(any(ch.isdigit() for ch in str(e.inputs)) for e in texts)
    assert not set(vd.calibration_texts()) & {e.inputs for e in texts}
    assert all("[MASK]" in e.inputs for e in vd.builtin("fill-mask", "[MASK]"))
    assert dataclasses.asdict(vd.builtin("zero-shot-classification")[0])["parameters"]["candidate_labels"]


@dataclass(frozen=True)
class Explode:
    """A test-only step whose builder fails, as a quantizer crash would."""


EXPLOSIONS: list[Path] = []


def explode(step: Explode, prev: build.Built, dst: Path, ctx: build.BuildContext) -> build.Built:
    EXPLOSIONS.append(dst)
    raise RuntimeError("quantizer crashed on node X")


def test_a_candidate_that_cannot_be_built_is_reported_not_fatal(tiny_model, tmp_path: Path, monkeypatch) -> None:
    """Both recipes on the crashing step fail with its error, and the step ran once (a failure is remembered)."""
    crashing = (Recipe("crashing", (Explode(),)), Recipe("crashing-too", (Explode(), recipes.Fuse())))
    monkeypatch.setattr(recipes, "RECIPES", (*recipes.RECIPES, *crashing))
    monkeypatch.setitem(build.BUILDERS, Explode, explode)
    EXPLOSIONS.clear()
    report = build_artifact(tiny_model("bert", "base"), tmp_path / "out", "base", recipes="crashing,fp32,crashing-too")
    for name in ("crashing", "crashing-too"):
        crashed = report.candidate(name)
        assert crashed["verdict"] == "failed" and crashed["reasons"] == ["RuntimeError: quantizer crashed on node X"]
    assert len(EXPLOSIONS) == 1
    assert report.data["chosen"] == "fp32" and "crashing: failed: RuntimeError" in report.table()
