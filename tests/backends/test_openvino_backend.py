"""OpenVINO as a compilation target and a backend (issue 14): candidates built, gated and timed like ONNX
Runtime's, an IR artifact served with the same answers through the same task code, without torch, and the bf16
and fp16 candidates skipped with their reason on a CPU without their units."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from squeezer.compiler.recipes import all_recipes
from squeezer.config import ServeConfig
from squeezer.hardware import BF16_UNITS, FP16_UNITS, hardware_fingerprint
from squeezer.runtime import load_runtime
from squeezer.sources import ModelSource
from tests.compiler.artifacts import build_artifact
from tests.backends.lone import check_lone_batches_run_wide
from tests.helpers import assert_close, run_direct

TEXTS = ["I loved every minute of it!", "Terrible service, never again.", "It was fine, I guess, for the price."]


@pytest.fixture(scope="module")
def ov_artifacts(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """An IR artifact per head, built from the fp32 OpenVINO recipe alone, so it is what gets served."""
    out = {}
    for head in ("sequence-classification", "base"):
        report = build_artifact(tiny_model("bert", head), tmp_path_factory.mktemp(f"ov-{head}") / "art", head,
                                recipes="ov-fp32")
        out[head] = report.path
    return out


@pytest.mark.parametrize("head", ["sequence-classification", "base"])
def test_an_ir_artifact_answers_like_the_pytorch_reference(ov_artifacts, tiny_model, load, head: str) -> None:
    report = json.loads((ov_artifacts[head] / "squeezer.json").read_text())
    assert report["graph"]["runtime"] == "openvino" and report["graph"]["file"] == "model.xml"
    runtime = load_runtime(ModelSource("m", ov_artifacts[head], artifact=True), ServeConfig())
    try:
        facts = runtime.describe()
        assert facts["backend"] == "openvino" and facts["dtype"] == report["graph"]["dtype"]
        assert report["graph"]["precision"] == "f32"
        reference = load(tiny_model("bert", head))
        for text in (TEXTS[0], TEXTS):
            assert_close(run_direct(runtime.model, text).output, run_direct(reference, text).output, 1e-4)  # type: ignore[attr-defined]
    finally:
        runtime.close()


@pytest.mark.parametrize("name, units, named", [("ov-bf16", BF16_UNITS, "AMX or AVX-512 BF16"),
                                                 ("ov-f16", FP16_UNITS, "AVX-512 FP16 or AMX FP16")])
def test_a_half_precision_candidate_is_tried_only_where_the_cpu_has_its_units(tiny_model, tmp_path, name: str,
                                                                               units, named: str) -> None:
    report = build_artifact(tiny_model("bert", "sequence-classification"), tmp_path / "art", "sequence-classification",
                            recipes=f"ov-fp32,{name}")
    candidate = next(c for c in report.candidates if c["name"] == name)
    recipe = next(r for r in all_recipes() if r.name == name)
    if set(units[0]) & set(hardware_fingerprint()["cpu"]["flags"]):  # built, gated and timed like every candidate
        assert candidate["verdict"] in ("chosen", "passed", "rejected") and candidate["metrics"]
        assert candidate["precision"] == recipe.precision and candidate["dtype"] == recipe.dtype != "float32"
    else:
        assert candidate["verdict"] == "skipped" and named in candidate["reasons"][0] and not candidate["timings"]
    assert named in (recipe.missing_features(["avx2", "fma"]) or "")
    assert all(recipe.missing_features(["avx2", flag]) is None for flag in units[0]) and recipe.runtime == "openvino"


@pytest.mark.parametrize("name, units", [("ov-bf16", BF16_UNITS), ("ov-f16", FP16_UNITS)])
def test_a_half_precision_artifact_is_served_in_its_precision(tiny_model, tmp_path, load, name: str, units) -> None:
    """The precision is the plugin's compile hint, not the graph's: the artifact carries it, the backend compiles
    with it (the compiled model reports it back) and answers as PyTorch does, within half precision's error."""
    if not set(units[0]) & set(hardware_fingerprint()["cpu"]["flags"]):
        pytest.skip(f"this CPU reports none of {', '.join(units[0])}")
    folder = tiny_model("bert", "base")
    report = build_artifact(folder, tmp_path / "art", "base", recipes=name)
    runtime = load_runtime(ModelSource("m", report.path, artifact=True), ServeConfig())
    try:
        recipe = next(r for r in all_recipes() if r.name == name)
        assert runtime.describe()["dtype"] == recipe.dtype and report.chosen["name"] == name
        compiled = runtime.model.backend._compiled  # type: ignore[attr-defined]
        assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == recipe.precision
        reference = load(folder)
        for text in TEXTS:  # each token's vector, as the gate judges: half precision moves values, not directions
            got, want = (np.asarray(run_direct(model, text).output, dtype=np.float64)
                         for model in (runtime.model, reference))  # type: ignore[attr-defined]
            got, want = got.reshape(-1, got.shape[-1]), want.reshape(-1, want.shape[-1])
            cosines = (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
            assert got.shape == want.shape and cosines.min() > 0.99, cosines.min()
    finally:
        runtime.close()


def test_the_gate_rejects_an_openvino_candidate_that_breaks_accuracy(tiny_model, tmp_path, monkeypatch) -> None:
    from squeezer.backends.openvino_backend import OpenVinoBackend

    forward = OpenVinoBackend.forward

    def broken(self, batch):  # a conversion that lost the classifier's bias, say
        return {name: value + 3.0 * np.arange(value.shape[-1]) for name, value in forward(self, batch).items()}

    monkeypatch.setattr(OpenVinoBackend, "forward", broken)
    report = build_artifact(tiny_model("bert", "sequence-classification"), tmp_path / "art", "sequence-classification",
                            recipes="fp32,ov-fp32")
    verdicts = {c["name"]: c for c in report.candidates}
    assert verdicts["ov-fp32"]["verdict"] == "rejected" and verdicts["ov-fp32"]["reasons"]
    assert report.chosen["name"] == "fp32"


def test_an_ir_artifact_is_served_without_torch(ov_artifacts) -> None:
    code = ("import sys; sys.modules['torch'] = None\n"
            "from squeezer.config import ServeConfig; from squeezer.runtime import load_runtime\n"
            "from squeezer.sources import ModelSource; from pathlib import Path\n"
            "runtime = load_runtime(ModelSource('m', Path(sys.argv[1]), artifact=True), ServeConfig())\n"
            "print(runtime.describe()['backend'])\n")
    done = subprocess.run([sys.executable, "-c", code, str(ov_artifacts["base"])], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "openvino"


def test_an_artifact_chosen_for_cpu_features_this_cpu_lacks_is_refused(ov_artifacts, tmp_path) -> None:
    """The fingerprint decides (issue 14): a bf16 artifact copied to a CPU without bf16 units is refused with the
    reason, not served silently slower or in another precision than its report measured."""
    import shutil

    from squeezer.artifact import ArtifactError, load_artifact, read_report, write_report

    foreign = tmp_path / "foreign"
    shutil.copytree(ov_artifacts["base"], foreign)
    report = read_report(foreign)
    write_report(foreign, {k: v for k, v in report.items() if k not in ("files", "checksum")} | {"requires": ["amx_made_up"]})
    with pytest.raises(ArtifactError, match="amx_made_up.*optimize the model again"):
        load_artifact(foreign)
    assert load_artifact(ov_artifacts["base"]).report["requires"] == []  # an fp32 IR runs anywhere


def test_instances_run_as_openvino_streams_with_the_same_answers(ov_artifacts) -> None:
    """--instances 2 compiles two OpenVINO streams of one model: two batches at once, from two threads with their
    own infer requests, answering exactly as one stream does; a batch marked alone, with none running, takes the
    model compiled as one stream on every thread instead, and only such a batch."""
    from concurrent.futures import ThreadPoolExecutor

    from squeezer.backends import Batch
    from squeezer.config import BackendConfig

    source = ModelSource("m", ov_artifacts["base"], artifact=True)
    one = load_runtime(source, ServeConfig(backend=BackendConfig(instances=1)))
    two = load_runtime(source, ServeConfig(backend=BackendConfig(instances=2, threads=2)))
    try:
        assert one.model.backend.capabilities().instances == 1  # type: ignore[attr-defined]
        assert one.model.backend._wide is None  # type: ignore[attr-defined]
        backend = two.model.backend  # type: ignore[attr-defined]
        assert backend.capabilities().instances == 2
        assert backend._compiled.get_property("NUM_STREAMS") == 2
        assert (backend._wide.get_property("NUM_STREAMS"), backend._wide.get_property("INFERENCE_NUM_THREADS")) == (1, 2)
        check_lone_batches_run_wide(backend, "_wide_request", "infer", lambda got, want: assert_close(
            got["last_hidden_state"], want["last_hidden_state"], 1e-5))
        batches = [Batch.pad([[101, 7, 8, 9, 102][: 3 + i % 3]] * (1 + i % 4), None, 0) for i in range(12)]
        with ThreadPoolExecutor(2) as pool:
            together = list(pool.map(backend.forward, batches))
        for batch, got in zip(batches, together):
            want = one.model.backend.forward(batch)  # type: ignore[attr-defined]
            assert_close(got["last_hidden_state"], want["last_hidden_state"], 1e-5)
    finally:
        one.close()
        two.close()
