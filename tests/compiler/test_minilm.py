"""The real all-MiniLM-L6-v2, optimized once for the module: the gate catches plain s8 int8, the int8 variant
that passes keeps a minimum cosine of at least 0.99 on the built-in set, and the served artifact agrees."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from squeezer.compiler import validation_data as vd
from squeezer.compiler.config import OptimizeConfig
from squeezer.compiler.gate import Gate
from squeezer.compiler.optimize import optimize
from squeezer.compiler.report import Report
from squeezer.hardware import INT8_DOT_UNITS
from squeezer.sources import ModelSource
from tests.backends.test_onnx_backend import serve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, OptimizeConfig, Path]:
    root = tmp_path_factory.mktemp("minilm")
    config = OptimizeConfig(cache_dir=str(root / "cache"), timing_rounds=8)
    source = ModelSource("sentence-transformers/all-MiniLM-L6-v2", minilm_path)
    return optimize(source, root / "artifact", config, progress=lambda _: None), config, root


def test_gate_catches_plain_s8_dynamic_int8(minilm) -> None:
    report, _, _ = minilm
    plain = report.candidate("int8-dyn-s8")
    if plain["verdict"] == "skipped":  # a CPU without int8 dot-product units does not try full-range s8 weights
        assert "int8 dot-product units" in plain["reasons"][0] and not plain["metrics"]
        assert not set(INT8_DOT_UNITS[0]) & set(report.data["hardware"]["cpu"]["flags"])
        return
    assert plain["verdict"] == "rejected"
    assert plain["metrics"]["min_cosine"] < 0.99
    assert any(reason.startswith("min_cosine") for reason in plain["reasons"])


def test_int8_variant_keeps_min_cosine_of_099(minilm) -> None:
    report, _, _ = minilm
    passed_int8 = [c for c in report.candidates if c["dtype"] == "int8" and c["verdict"] in ("passed", "screened", "chosen")]
    assert passed_int8, report.table()
    assert all(c["metrics"]["min_cosine"] >= 0.99 for c in passed_int8)
    assert report.chosen["metrics"]["min_cosine"] >= 0.99
    assert report.data["accuracy"]["validation"]["examples"] == len(vd.builtin("feature-extraction"))


def test_served_artifact_matches_the_report(minilm, load, minilm_path: Path) -> None:
    report, _, _ = minilm
    served = serve(report.path)
    reference = load(minilm_path)
    verdict = Gate(reference, vd.builtin("feature-extraction"), "feature-extraction").judge(served.backend)
    assert verdict.passed and verdict.metrics["min_cosine"] >= 0.99
    assert verdict.metrics["min_cosine"] == pytest.approx(report.chosen["metrics"]["min_cosine"], abs=1e-4)


def test_served_embeddings_agree_with_sentence_transformers(minilm, minilm_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from tests.helpers import run_direct

    report, _, _ = minilm
    texts = ["A cat sleeps on the sofa.", "Stocks fell sharply on Monday.", "¿Dónde está la estación?"]
    served = np.array(run_direct(serve(report.path), texts).output)
    expected = SentenceTransformer(str(minilm_path), device="cpu").encode(texts, normalize_embeddings=True)
    cosines = (served * expected).sum(axis=1) / np.linalg.norm(served, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= 0.99


def test_second_run_is_instant(minilm, minilm_path: Path) -> None:
    first, config, root = minilm
    start = time.perf_counter()
    second = optimize(ModelSource("sentence-transformers/all-MiniLM-L6-v2", minilm_path), root / "again", config,
                      progress=lambda _: None)
    assert time.perf_counter() - start < 10.0
    assert second.cached and second.data["chosen"] == first.data["chosen"]
