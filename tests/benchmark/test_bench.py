"""`squeezer bench --quick` (issue 16, item 9): it runs every rung on a real server and writes valid files. What
speed it reaches is for the reader, never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_quick_bench_runs_the_ladder_and_writes_its_report(tiny_model, tmp_path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "squeezer.cli", "bench", str(tiny_model("bert", "base")), "--quick", "--out", str(out)]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results["rungs"]] == ["out-of-the-box", "squeezer-pytorch", "squeezer-optimized"]  # no naive rung
    assert results["hardware"]["cpu"]["flags"] and results["workloads"] == {"embed-short": "one sentence of 8 to 48 words"}
    for rung in results["rungs"]:
        measured = rung["results"]["embed-short"]["4"]
        assert measured["rps"] > 0 and measured["errors"] == 0 and measured["p50_ms"] <= measured["p99_ms"]
        assert rung["accuracy"]["embed-short"] >= 0.99  # the same answers as the out-of-the-box rung's
    assert results["rungs"][0]["results"]["embed-short"]["4"]["speedup"] == 1.0
    report = (out / "report.md").read_text()
    assert results["ceilings"]["embed-short"]["items_per_s"] > 0 and "optimized" in " ".join(results["ceilings"]["embed-short"]["all"])
    assert all(0 < r["results"]["embed-short"]["4"]["of_ceiling"] for r in results["rungs"]) and "Ceiling: " in report
    assert report.count("| embed-short") == 0 and report.count("| squeezer-") == 2 and "## embed-short" in report
    assert report in done.stdout
    for chart in ("ladder-embed-short.png", "curve-embed-short.png"):
        assert png_size(out / chart) > (300, 200), chart


def test_bench_climbs_the_chat_ladder_with_structured_output(tiny_decoder_path, tmp_path) -> None:
    """Generation rungs: the naive pipeline (answers only at 4 clients: it runs at one), the cached one, squeezer;
    greedy answers identical to `generate`'s, and every chat-json answer valid against its schema on squeezer."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "squeezer.cli", "bench", str(tiny_decoder_path("llama")), "--workload", "chat",
           "--workload", "chat-json", "--concurrency", "4", "--duration", "2", "--out", str(out)]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    rungs = {r["name"]: r for r in results["rungs"]}
    assert list(rungs) == ["naive-pipeline", "out-of-the-box", "squeezer-pytorch", "squeezer-optimized"]
    assert rungs["naive-pipeline"]["results"] == {}  # one client only; the sweep asked for 4
    for name in ("out-of-the-box", "squeezer-pytorch", "squeezer-optimized"):
        for workload in ("chat", "chat-json"):
            measured = rungs[name]["results"][workload]["4"]
            assert measured["tokens_per_s"] > 0 and measured["errors"] == 0 and measured["ttft_p50_ms"] <= measured["p99_ms"]
    for name in ("naive-pipeline", "squeezer-pytorch"):  # greedy float32: the same tokens as generate's
        assert rungs[name]["accuracy"]["chat"] == 1.0
    for name in ("squeezer-pytorch", "squeezer-optimized"):  # a grammar: valid by construction
        assert rungs[name]["accuracy"]["chat-json"] == 1.0
    assert {p["name"] for p in results["peers"]} >= {"llama-server", "llama-cpp-python"}
    assert all(p["state"] in ("missing", "installed; not driven by this version yet") for p in results["peers"])
    assert "## chat-json" in done.stdout and "| llama-server |" in done.stdout
    assert all(png_size(out / f"{kind}-{w}.png") > (300, 200) for kind in ("ladder", "curve") for w in ("chat", "chat-json"))


def png_size(path) -> tuple[int, int]:
    """A PNG's width and height, read by Pillow (which fails on anything that is not a whole image)."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.size


def test_charts_without_matplotlib_say_how_to_get_them(monkeypatch) -> None:
    from squeezer.benchmark.charts import ChartsUnavailable, draw

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ChartsUnavailable, match=r"pip install 'squeezer\[bench\]'"):
        draw({"workloads": {}}, Path("."))


def test_bench_refuses_a_workload_the_model_cannot_run(minilm_path, tmp_path) -> None:
    cmd = [sys.executable, "-m", "squeezer.cli", "bench", str(minilm_path), "--workload", "chat", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "chat cannot run on a feature-extraction model; this one runs embed-short, embed-batch" in done.stderr
