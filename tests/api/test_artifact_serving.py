"""Serving what `squeezer optimize` wrote: the CLI end to end, ONNX Runtime without torch, `--optimize`."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from squeezer.testing.server import ServerProcess
from tests.helpers import assert_close

# Runs the CLI with torch made unimportable: serving an artifact must not need it.
NO_TORCH = ("-c", "import sys; sys.modules['torch'] = None; from squeezer.cli import main; sys.exit(main())")
TEXTS = ["I loved every minute of it!", "Terrible service, never again.", "It was fine, I guess."]


@pytest.fixture(scope="module")
def artifact(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "classifier"
    cmd = [sys.executable, "-m", "squeezer.cli", "optimize", str(tiny_model("bert", "sequence-classification")),
           "--out", str(out), "--recipes", "fp32,int8-dyn-u8-pc", "--no-cache", "--timing-rounds", "3"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "chosen:" in done.stdout and "fp32" in done.stdout
    return out


def test_artifact_served_without_torch_matches_the_reference(artifact, tiny_model, tmp_path) -> None:
    report = json.loads((artifact / "squeezer.json").read_text())
    onnx = ServerProcess([f"m={artifact}"], tmp_path, launcher=NO_TORCH)
    torch = ServerProcess([f"m={tiny_model('bert', 'sequence-classification')}"], tmp_path)
    try:
        onnx.wait_ready()
        torch.wait_ready()
        info = httpx.get(onnx.url + "/info").json()["models"][0]
        assert info["state"] == "ready", onnx.logs()
        assert info["backend"] == "onnxruntime" and info["task"] == "text-classification"
        ours = httpx.post(onnx.url + "/models/m", json={"inputs": TEXTS}).json()
        reference = httpx.post(torch.url + "/models/m", json={"inputs": TEXTS}).json()
    finally:
        onnx.stop()
        torch.stop()
    assert [[r["label"] for r in one] for one in ours] == [[r["label"] for r in one] for one in reference]
    tolerance = 1e-4 if report["chosen"].startswith("fp32") else 0.05
    assert_close([[r["score"] for r in one] for one in ours], [[r["score"] for r in one] for one in reference], tolerance)


def test_corrupt_artifact_is_refused_with_a_reason(artifact, tmp_path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(artifact, broken)
    graph = broken / json.loads((broken / "squeezer.json").read_text())["graph"]["file"]
    graph.write_bytes(graph.read_bytes()[:1000])
    srv = ServerProcess([f"m={broken}"], tmp_path)
    try:
        srv.wait_ready()
        model = httpx.get(srv.url + "/info").json()["models"][0]
    finally:
        srv.stop()
    assert model["state"] == "failed" and "checksum" in model["error"]


def test_serve_optimize_compiles_then_serves_the_artifact(tiny_model, tmp_path) -> None:
    srv = ServerProcess([f"m={tiny_model('bert', 'base')}", "--optimize"], tmp_path, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    try:
        srv.wait_ready(600)
        model = httpx.get(srv.url + "/info").json()["models"][0]
        assert model["backend"] in ("onnxruntime", "openvino"), srv.logs()  # whichever candidate won here
        assert httpx.post(srv.url + "/models/m", json={"inputs": "hello"}).status_code == 200
    finally:
        srv.stop()
    assert list((tmp_path / "cache" / "squeezer" / "optimize").iterdir())
