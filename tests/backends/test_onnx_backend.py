"""The ONNX Runtime backend: serves artifacts with the report's answers, tuned sessions, no torch, clear refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from squeezer.artifact import (
    Artifact,
    ArtifactError,
    is_artifact,
    load_artifact,
    report_checksum,
)
from squeezer.backends import BACKENDS, Batch
from squeezer.backends.onnx_backend import (
    OnnxBackend,
    default_spinning,
    instances_for,
    session_options,
)
from squeezer.compiler import validation_data as vd
from squeezer.compiler.gate import Gate
from squeezer.compiler.report import Report
from squeezer.config import BackendConfig, ModelConfig
from squeezer.hardware import available_cpus
from squeezer.loading import LoadedModel, load_info
from squeezer.sources import ModelSource
from squeezer.tasks import TASKS
from tests.backends.lone import check_lone_batches_run_wide
from tests.compiler.artifacts import TASK_OF_HEAD, build_artifact
from tests.helpers import assert_close, run_direct

HEADS = ["base", "sequence-classification", "token-classification", "masked-lm", "question-answering"]


@pytest.fixture(scope="module")
def artifacts(tiny_model: Callable[[str, str], Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Report]:
    """One quick artifact per head (tiny BERT), built once for this module."""
    root = tmp_path_factory.mktemp("onnx-artifacts")
    return {head: build_artifact(tiny_model("bert", head), root / head, head) for head in HEADS}


def serve(path: Path, backend_config: BackendConfig | None = None) -> LoadedModel:
    """An artifact loaded as the server will once sources are wired: info from its files, the backend its report
    names (onnxruntime, or openvino for an IR)."""
    source = ModelSource("tiny", path)
    artifact = load_artifact(path)
    info, _ = load_info(source, ModelConfig(task=artifact.task))
    task = TASKS[artifact.task]
    config = backend_config or BackendConfig()
    backend = BACKENDS[artifact.runtime](source, task.head, ModelConfig(), config, info.max_length, artifact=artifact)
    backend.warmup()
    return LoadedModel(source, task, info, backend)


@pytest.mark.parametrize("head", HEADS)
def test_served_answers_match_torch_within_the_reports_tolerance(head: str, artifacts, tiny_model, load) -> None:
    report = artifacts[head]
    task = TASK_OF_HEAD[head]
    served = serve(report.path)
    reference = load(tiny_model("bert", head), task)
    gate = Gate(reference, vd.builtin(task, reference.info.tokenizer.mask_token), task, report.data["accuracy"]["budget"])
    verdict = gate.judge(served.backend)
    assert verdict.passed, verdict.failures
    for name, value in verdict.metrics.items():  # the same numbers the report promised for the chosen graph
        assert value == pytest.approx(report.chosen["metrics"][name], abs=1e-4)


def test_fp32_artifact_answers_like_torch(tiny_model, load, tmp_path: Path) -> None:
    folder = tiny_model("bert", "question-answering")
    report = build_artifact(folder, tmp_path / "a", "question-answering", recipes="fp32-fused")
    served, reference = serve(report.path), load(folder, "question-answering")
    request = {"question": "Where is the tower?", "context": "Sarah met John at the Eiffel Tower in Paris on Monday."}
    assert_close(run_direct(served, request).output, run_direct(reference, request).output, tol=1e-4)
    assert served.backend.capabilities().name == "onnxruntime"


def test_capabilities_and_session_tuning(artifacts) -> None:
    backend = serve(artifacts["base"].path, BackendConfig(threads=1)).backend
    caps = backend.capabilities()
    assert (caps.name, caps.device, caps.head, caps.dtype) == ("onnxruntime", "cpu", "base", artifacts["base"].chosen["dtype"])
    options = session_options(0, spinning=False)
    assert options.intra_op_num_threads == available_cpus() and options.inter_op_num_threads == 1
    assert options.enable_mem_pattern is False and options.enable_cpu_mem_arena is True
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options(3, spinning=True).get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert session_options(3, spinning=True).intra_op_num_threads == 3
    assert not default_spinning(0) and not default_spinning(available_cpus())  # no core left: no spinning
    assert default_spinning(1) == (available_cpus() > 1)


def test_instances_default_to_one_per_core_on_a_cpu() -> None:
    def artifact(target: str, profile: str) -> Artifact:
        return Artifact(Path("unused"), {"target": target, "profile": profile})

    for profile in ("latency", "throughput"):  # a lone batch runs on every core anyway (see the next test)
        assert instances_for(BackendConfig(), artifact("cpu", profile)) == available_cpus()
        assert instances_for(BackendConfig(), artifact("cuda", profile)) == 1
    assert instances_for(BackendConfig(threads=3), artifact("cpu", "throughput")) == 3
    assert instances_for(BackendConfig(instances=2), artifact("cpu", "latency")) == 2
    assert instances_for(BackendConfig(instances=1), artifact("cpu", "latency")) == 1


def test_instances_run_batches_at_once_with_the_same_answers(artifacts) -> None:
    """Two instances: batches at once from two threads on one session of one thread each, and a batch marked alone
    on a second session on both threads; the same answers either way."""
    backend = serve(artifacts["base"].path, BackendConfig(threads=2, instances=2)).backend
    assert backend.capabilities().instances == 2
    assert backend._wide is not None and serve(artifacts["base"].path, BackendConfig(instances=1)).backend._wide is None
    batches = [Batch.pad([[101, *range(1000 + i, 1000 + i + n), 102] for n in (3, 9, 5)], None, 0) for i in range(8)]
    alone = [backend.forward(b) for b in batches]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(backend.forward, batches))
    for a, b in zip(alone, together):
        for name in a:
            assert_close(a[name], b[name], 1e-5)
    check_lone_batches_run_wide(backend, "_wide", "run", lambda got, want: assert_close(
        got["last_hidden_state"], want["last_hidden_state"], 1e-5))


def test_batches_with_and_without_segment_ids(artifacts) -> None:
    backend = serve(artifacts["base"].path).backend
    ids = [[101, 7592, 2088, 102], [101, 2088, 102]]
    with_types = backend.forward(Batch.pad(ids, [[0] * 4, [0] * 3], 0))["last_hidden_state"]
    without = backend.forward(Batch.pad(ids, None, 0))["last_hidden_state"]
    assert with_types.dtype == np.float32 and with_types.shape == (2, 4, 32)
    np.testing.assert_array_equal(with_types, without)


def copy_artifact(src: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(src, dest)
    return dest


def edit_report(path: Path, reseal: bool = True, **changes: object) -> None:
    file = path / "squeezer.json"
    report = json.loads(file.read_text())
    report.update(changes)
    if reseal:
        report["checksum"] = report_checksum(report)
    file.write_text(json.dumps(report))


def refused(path: Path, head: str = "base") -> str:
    with pytest.raises(ArtifactError) as error:
        OnnxBackend(ModelSource("x", path), head, ModelConfig(), BackendConfig(), 128)
    return str(error.value)


def test_truncated_graph_is_refused(artifacts, tmp_path: Path) -> None:
    path = copy_artifact(artifacts["base"].path, tmp_path)
    graph = path / "model.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    assert "model.onnx does not match the checksum in squeezer.json (truncated or modified)" in refused(path)
    with pytest.raises(ArtifactError, match="cannot be loaded by onnxruntime"):  # even when nobody checks hashes
        OnnxBackend.from_graph(graph, "base")


def test_edited_report_is_refused(artifacts, tmp_path: Path) -> None:
    path = copy_artifact(artifacts["base"].path, tmp_path)
    edit_report(path, reseal=False, task="text-classification")
    assert "squeezer.json was modified after it was written" in refused(path)


def test_other_format_version_is_refused(artifacts, tmp_path: Path) -> None:
    path = copy_artifact(artifacts["base"].path, tmp_path)
    edit_report(path, format_version=99)
    message = refused(path)
    assert "format version 99 is not supported by this squeezer (it reads version 1)" in message
    assert "rebuild it with `squeezer optimize`" in message


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda p: (p / "squeezer.json").write_text("{not json"), "squeezer.json is not valid JSON"),
        (lambda p: (p / "squeezer.json").unlink(), "is not a squeezer artifact: it has no squeezer.json"),
        (lambda p: (p / "model.onnx").unlink(), "model.onnx is missing"),
        (lambda p: (p / "tokenizer.json").write_text("{}"), "tokenizer.json does not match the checksum"),
        (lambda p: edit_report(p, format="something-else"), "is not a squeezer artifact report"),
    ],
    ids=["bad-json", "no-report", "no-graph", "tokenizer-changed", "other-format"],
)
def test_damaged_artifacts_are_refused(artifacts, tmp_path: Path, damage, expected: str) -> None:
    path = copy_artifact(artifacts["base"].path, tmp_path)
    damage(path)
    assert expected in refused(path)


def test_mismatched_head_is_refused(artifacts) -> None:
    message = refused(artifacts["base"].path, head="sequence-classification")
    assert "was compiled for the 'base' head (feature-extraction)" in message


def test_graph_that_does_not_fit_the_head_is_refused(artifacts) -> None:
    with pytest.raises(ArtifactError, match="does not match the 'question-answering' head"):
        OnnxBackend.from_graph(artifacts["base"].path / "model.onnx", "question-answering")


def test_is_artifact(artifacts, tiny_model) -> None:
    assert is_artifact(artifacts["base"].path) and not is_artifact(tiny_model("bert", "base"))


NO_TORCH = """
import sys
sys.modules["torch"] = None  # any `import torch` now fails
from pathlib import Path
from squeezer.backends import BACKENDS, Batch
from squeezer.config import BackendConfig, ModelConfig
from squeezer.loading import load_info
from squeezer.sources import ModelSource
source = ModelSource("tiny", Path(sys.argv[1]))
info, task = load_info(source, ModelConfig())
backend = BACKENDS["onnxruntime"](source, "base", ModelConfig(), BackendConfig(), info.max_length)
backend.warmup()
ids = info.tokenizer("served without torch")["input_ids"]
out = backend.forward(Batch.pad([ids], None, 0))["last_hidden_state"]
assert sys.modules["torch"] is None
print(task, out.shape)
"""


def test_serving_an_artifact_needs_no_torch(artifacts) -> None:
    result = subprocess.run([sys.executable, "-c", NO_TORCH, str(artifacts["base"].path)], capture_output=True, text=True,
                            cwd=Path(__file__).parents[2], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("feature-extraction (1, ")


def test_backend_module_does_not_import_the_compiler() -> None:
    code = ("import sys; import squeezer.backends.onnx_backend, squeezer.artifact; "
            "print(sorted(m for m in sys.modules if m.startswith(('squeezer.compiler', 'torch'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2],
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
