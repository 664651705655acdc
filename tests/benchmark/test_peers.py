"""Peers in `squeezer bench` (issue 16): a server peer is a row beside squeezer's rungs, driven by the same load
generator in the same interleaved rounds, its answers checked against the same reference, shown in the JSON, the
report and the charts; a peer that is missing is reported missing with why, never dropped.

CI has neither infinity-emb nor llama-server, so the mechanism is tested for real with squeezer's own server given
as a peer's command (any OpenAI-compatible server can be one); the real peers run where they are found: on PATH,
or at SQUEEZER_TEST_INFINITY_EMB / SQUEEZER_TEST_LLAMA_SERVER (an executable in the peer's own environment)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from squeezer.hardware import available_cpus

# squeezer's own server as a peer: what a user gives for any OpenAI-compatible server (no background compile, so it
# serves one backend throughout, as the rungs do)
SQUEEZER_AS_PEER = ("{python} -m squeezer.cli serve bench={model} --port {port} --threads {threads} "
                    "--no-optimize-in-background --log-level warning")


def bench(model: Path | str, tmp_path: Path, *flags: str) -> tuple[dict[str, Any], str, str]:
    """`squeezer bench MODEL FLAGS` run as a command: (results.json, report.md, its progress on stderr)."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "squeezer.cli", "bench", str(model), *flags, "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert report in done.stdout  # the terminal table is the report
    return json.loads((out / "results.json").read_text()), report, done.stderr


def gone(command: str) -> bool:
    """Whether the server a peer's command started no longer answers on its port (the bench stopped it)."""
    port = command.split("--port ")[1].split()[0]
    try:
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    except httpx.HTTPError:
        return True
    return False


def test_a_server_given_as_a_peer_is_measured_in_the_rounds_beside_squeezer(minilm_path, tmp_path) -> None:
    """Two rounds, A, B, P, A, B, P: the peer's embeddings come through OpenAI's /v1/embeddings, reshaped to the
    reference's vectors (cosine 1 with out-of-the-box's); squeezer's best rung is set against it round by round;
    infinity-emb, given at a path that does not exist, is reported missing with that reason."""
    results, report, progress = bench(minilm_path, tmp_path, "--workload", "embed-short", "--concurrency", "2",
                                      "--duration", "2", "--rounds", "2", "--rung", "squeezer-pytorch",
                                      "--peer", f"squeezer-peer={SQUEEZER_AS_PEER}",
                                      "--peer", "infinity-emb=/nonexistent/bin/infinity_emb")
    rungs = {r["name"]: r for r in results["rungs"]}
    assert list(rungs) == ["out-of-the-box", "squeezer-pytorch", "squeezer-peer"]
    peer = rungs["squeezer-peer"]
    assert peer["peer"] is True and peer["threads"] == available_cpus() and f"--threads {available_cpus()}" in peer["command"]
    assert peer["accuracy"]["embed-short"] >= 0.9999  # the same model: the same vectors, through another route
    measured, theirs = peer["results"]["embed-short"]["2"], rungs["squeezer-pytorch"]["results"]["embed-short"]["2"]
    assert measured["rps"] > 0 and measured["errors"] == 0 and len(measured["rounds"]) == 2
    assert measured["generator"] == ("wrk" if shutil.which("wrk") else "python (httpx)")  # wrk when installed
    assert peer["compared_with"] == {"embed-short": "squeezer-pytorch"} and measured["vs_previous"] is None
    for ours, peers in zip(theirs["rounds"], measured["rounds"]):
        assert peers["squeezer_over"] == pytest.approx(ours["rps"] / peers["rps"])
    assert [line.split(": ")[1] for line in progress.splitlines() if "at 2 clients" in line] == list(rungs) * 2
    states = {p["name"]: p for p in results["peers"]}
    assert states["squeezer-peer"]["state"] == "driven"
    assert states["infinity-emb"]["state"] == "missing"
    assert states["infinity-emb"]["reason"] == "/nonexistent/bin/infinity_emb: no such file"
    assert "| squeezer-peer | 2 | " in report and "- squeezer-peer (peer): a server given by its command" in report
    assert "squeezer-pytorch over squeezer-peer (requests/s, round by round): " in report
    assert "| infinity-emb | missing | /nonexistent/bin/infinity_emb: no such file | `python -m venv" in report
    assert labels(results, "embed-short") == (["out-of-the-box", "squeezer\npytorch", "squeezer\npeer\n(peer)"],
                                              ["out-of-the-box", "squeezer-pytorch", "squeezer-peer (peer)"])
    assert (tmp_path / "out" / "ladder-embed-short.png").stat().st_size > 0 and gone(peer["command"])


def test_a_chat_peer_streams_the_same_greedy_answers_and_states_its_prompt_cache(tiny_decoder_path, tmp_path) -> None:
    """Chat through a peer's OpenAI stream: identical greedy text; each rung's prompt caching stated. llama-server,
    given for a model that is not a GGUF file, is reported skipped with why rather than started."""
    results, report, _ = bench(tiny_decoder_path("llama"), tmp_path, "--workload", "chat", "--concurrency", "2",
                               "--duration", "2", "--rounds", "1", "--rung", "squeezer-pytorch",
                               "--peer", f"squeezer-peer={SQUEEZER_AS_PEER}", "--peer", f"llama-server={shutil.which('true')}")
    rungs = {r["name"]: r for r in results["rungs"]}
    assert list(rungs) == ["out-of-the-box", "squeezer-pytorch", "llama-server", "squeezer-peer"]  # known peers first
    peer = rungs["squeezer-peer"]
    measured = peer["results"]["chat"]["2"]
    assert peer["accuracy"]["chat"] == 1.0 and measured["tokens_per_s"] > 0 and measured["errors"] == 0
    assert measured["generator"] == "python (httpx streams)" and measured["squeezer_over"] > 0
    assert rungs["out-of-the-box"]["prompt_cache"].startswith("none")
    assert rungs["squeezer-pytorch"]["prompt_cache"] == "none (squeezer's prefix cache is for compiled decoders)"
    assert peer["prompt_cache"] == "not known (a server given by its command)"
    assert rungs["llama-server"]["skipped"].startswith("llama-server runs GGUF files only")
    assert "| llama-server | - | skipped: llama-server runs GGUF files only" in report
    assert next(p for p in results["peers"] if p["name"] == "llama-server")["state"] == "skipped"
    assert "prompt cache: none (squeezer's prefix cache is for compiled decoders)" in report
    assert "squeezer-pytorch over squeezer-peer (tokens/s, round by round): " in report and gone(peer["command"])


def test_peers_are_found_or_reported_with_why() -> None:
    """Every peer listed for the run's workloads; an environment without the peer's module is missing with the
    failed import as its reason; an in-process library is not driven, and says why."""
    from squeezer.benchmark.peers import plan

    driven, status = plan(["chat"], {"llama-cpp-python": sys.executable, "openvino-genai": sys.executable})
    states = {p["name"]: p for p in status}
    assert driven == [] and list(states) == ["llama-server", "llama-cpp-python", "onnxruntime-genai", "openvino-genai"]
    assert states["llama-cpp-python"]["state"] == "missing"
    assert states["llama-cpp-python"]["reason"].endswith("'import llama_cpp.server' failed: ModuleNotFoundError: No module named 'llama_cpp'")
    assert states["openvino-genai"]["state"] == "not driven" and "no server of its own" in states["openvino-genai"]["reason"]
    assert {p["name"] for p in plan(["embed-short"], {})[1]} == {"infinity-emb"}


def test_an_unknown_peer_needs_a_command(minilm_path, tmp_path) -> None:
    cmd = [sys.executable, "-m", "squeezer.cli", "bench", str(minilm_path), "--peer", "mine=/bin/true", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "unknown peer 'mine'" in done.stderr and "--peer mine='COMMAND --port {port}" in done.stderr


def found(variable: str, command: str) -> str:
    """The peer's executable: $variable, else `command` on PATH; the test is skipped, saying so, where neither is."""
    exe = os.environ.get(variable) or shutil.which(command)
    if not exe:
        pytest.skip(f"{command} not found: install it in its own environment and set {variable} to it, or put it on PATH")
    return exe


def test_infinity_emb_beside_squeezer(minilm_path, tmp_path) -> None:
    exe = found("SQUEEZER_TEST_INFINITY_EMB", "infinity_emb")
    results, report, _ = bench(minilm_path, tmp_path, "--workload", "embed-short", "--concurrency", "2", "--duration", "2",
                               "--rounds", "1", "--rung", "squeezer-pytorch", "--peer", f"infinity-emb={exe}")
    peer = next(r for r in results["rungs"] if r["name"] == "infinity-emb")
    measured = peer["results"]["embed-short"]["2"]
    assert peer["accuracy"]["embed-short"] >= 0.999 and measured["rps"] > 0 and measured["errors"] == 0
    assert "--model-id" in peer["command"] and peer["threads"] == available_cpus() and gone(peer["command"])
    assert "squeezer-pytorch over infinity-emb (requests/s" in report


def test_llama_server_beside_squeezer_on_the_same_gguf(smollm2_file, tmp_path) -> None:
    exe = found("SQUEEZER_TEST_LLAMA_SERVER", "llama-server")
    folder, name = smollm2_file
    results, report, _ = bench(folder / name, tmp_path, "--workload", "chat", "--concurrency", "2", "--duration", "3",
                               "--rounds", "1", "--rung", "squeezer-pytorch", "--peer", f"llama-server={exe}")
    peer = next(r for r in results["rungs"] if r["name"] == "llama-server")
    measured = peer["results"]["chat"]["2"]
    assert measured["tokens_per_s"] > 0 and measured["errors"] == 0 and 0 <= peer["accuracy"]["chat"] <= 1
    assert peer["slots"] == 2 and f"-t {available_cpus()} " in peer["command"] and "-np 2 -c 1024 --cont-batching" in peer["command"]
    assert "cache_prompt" in peer["prompt_cache"] and gone(peer["command"])
    assert "squeezer-pytorch over llama-server (tokens/s" in report


def labels(results: dict[str, Any], name: str) -> tuple[list[str], list[str]]:
    """The ladder chart's bar labels and the latency chart's legend, as drawn from these results."""
    from squeezer.benchmark import charts

    plt = charts._pyplot()
    ladder, curve = charts._ladder(plt, results, name), charts._curve(plt, results, name)
    try:
        return ([t.get_text() for t in ladder.axes[0].get_xticklabels()],
                [t.get_text() for t in curve.axes[0].get_legend().get_texts()])
    finally:
        plt.close(ladder)
        plt.close(curve)
