"""Serving what `squeezer optimize` wrote: the CLI end to end, ONNX Runtime without torch, `--optimize`."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from squeezer.testing.server import ServerProcess
from tests.helpers import assert_close, error_message, run_direct

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


def test_faulty_artifacts_are_refused_with_a_reason_while_a_good_one_serves(artifact, tmp_path) -> None:
    """Truncated, from another squeezer's format version, edited by hand, or missing a file: each model fails to
    load with what is wrong (RELIABILITY.md, faults), and the good model beside them answers."""
    import shutil

    def broken(name: str, damage) -> str:
        folder = tmp_path / name
        shutil.copytree(artifact, folder)
        damage(folder, json.loads((folder / "squeezer.json").read_text()))
        return f"{name}={folder}"

    def truncate(folder, report) -> None:
        graph = folder / report["graph"]["file"]
        graph.write_bytes(graph.read_bytes()[:1000])

    def rewrite(folder, report, **changes) -> None:
        (folder / "squeezer.json").write_text(json.dumps({**report, **changes}))

    specs = [
        f"good={artifact}",
        broken("truncated", truncate),
        broken("future", lambda f, r: rewrite(f, r, format_version=r["format_version"] + 1)),
        broken("edited", lambda f, r: rewrite(f, r, task="fill-mask")),
        broken("missing", lambda f, r: (f / r["graph"]["file"]).unlink()),
    ]
    srv = ServerProcess(specs, tmp_path)
    try:
        srv.wait_ready()
        models = {m["id"]: m for m in httpx.get(srv.url + "/info").json()["models"]}
        answered = httpx.post(srv.url + "/models/good", json={"inputs": TEXTS})
        refused = httpx.post(srv.url + "/models/future", json={"inputs": TEXTS})
    finally:
        srv.stop()
    assert models["good"]["state"] == "ready" and answered.status_code == 200
    reasons = {"truncated": "checksum", "future": "format version", "edited": "modified after it was written",
               "missing": "is missing"}
    for name, reason in reasons.items():
        assert models[name]["state"] == "failed" and reason in models[name]["error"], models[name]
        assert "rebuild it with `squeezer optimize`" in models[name]["error"]
        assert str(tmp_path) not in models[name]["error"]  # no absolute path without --show-paths
    assert refused.status_code == 503 and "format version" in error_message(refused)


def test_serve_optimize_compiles_then_serves_the_artifact(tiny_model, load, tmp_path) -> None:
    folder = tiny_model("bert", "base")
    srv = ServerProcess([f"m={folder}", "--optimize"], tmp_path, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    try:
        srv.wait_ready(600)
        model = httpx.get(srv.url + "/info").json()["models"][0]
        assert model["backend"] in ("onnxruntime", "openvino"), srv.logs()  # whichever candidate won here
        response = httpx.post(srv.url + "/models/m", json={"inputs": TEXTS})
        assert response.status_code == 200, response.text
    finally:
        srv.stop()
    assert list((tmp_path / "cache" / "squeezer" / "optimize").iterdir())
    # The answers are the unoptimized model's, within the gate's bound for embeddings: each text's mean-pooled
    # token embeddings at a cosine of 0.99 or more (whatever candidate won: fp32, bf16 or int8).
    ours, reference = response.json(), run_direct(load(folder), TEXTS).output
    assert [np.shape(one) for one in ours] == [np.shape(one) for one in reference]
    for got, want in zip(ours, reference):
        a, b = np.mean(got[0], axis=0), np.mean(want[0], axis=0)
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.99, model


def test_serve_optimize_in_background_answers_at_once_then_swaps_in(tiny_model, tmp_path) -> None:
    """`--optimize-in-background`: ready on torch before any compile ends; /info then says the artifact serves."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    srv = ServerProcess([f"m={tiny_model('bert', 'base')}", "--optimize-in-background"], tmp_path, env=env)
    try:
        srv.wait_ready(120)
        first = httpx.post(srv.url + "/models/m", json={"inputs": TEXTS})
        seen = [httpx.get(srv.url + "/info").json()["models"][0]]
        deadline = time.monotonic() + 600
        while seen[-1]["optimization"]["state"] == "compiling" and time.monotonic() < deadline:
            time.sleep(0.5)
            seen.append(httpx.get(srv.url + "/info").json()["models"][0])
        later = httpx.post(srv.url + "/models/m", json={"inputs": TEXTS})
    finally:
        srv.stop()
    assert first.status_code == 200 and seen[0]["backend"] == "torch", seen[0]
    assert seen[-1]["optimization"]["state"] == "serving", (seen[-1], srv.logs())
    assert seen[-1]["backend"] == seen[-1]["optimization"]["backend"] in ("onnxruntime", "openvino")
    assert later.status_code == 200
    assert [np.shape(one) for one in later.json()] == [np.shape(one) for one in first.json()]
