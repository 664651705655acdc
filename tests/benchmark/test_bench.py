"""`squeezer bench --quick` (issue 16, item 9): it runs every rung on a real server and writes valid files. What
speed it reaches is for the reader, never asserted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LADDER = ["out-of-the-box", "squeezer-pytorch", "squeezer-compiled-fp32", "squeezer-optimized", "squeezer-runner-up"]


def test_quick_bench_runs_the_ladder_and_writes_its_report(tiny_model, tmp_path) -> None:
    """--quick with two rounds: every rung's server up at once, measured A, B, C, A, B, C; each figure the median
    of its rounds with min and max, the load generator's own CPU beside it, the compiled rungs beside the others."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "squeezer.cli", "bench", str(tiny_model("bert", "base")), "--quick", "--rounds", "2",
           "--out", str(out)]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    rungs = {r["name"]: r for r in results["rungs"]}
    assert list(rungs) == LADDER  # no naive rung: it is for generation
    assert results["rounds"] == 2 and results["measured_together"] == [LADDER]
    assert results["hardware"]["cpu"]["flags"] and results["workloads"] == {"embed-short": "one sentence of 8 to 48 words"}
    measured_rungs = [r for r in results["rungs"] if "skipped" not in r]
    assert [r["name"] for r in measured_rungs][:4] == LADDER[:4]  # only the runner-up may find no candidate
    for rung in measured_rungs:
        measured = rung["results"]["embed-short"]["4"]
        assert measured["rps"] > 0 and measured["errors"] == 0 and measured["p50_ms"] <= measured["p99_ms"]
        assert rung["accuracy"]["embed-short"] >= 0.99  # the same answers as the out-of-the-box rung's
        assert len(measured["rounds"]) == 2 and measured["errors"] == sum(r["errors"] for r in measured["rounds"])
        for key in ("rps", "p99_ms", "speedup", "of_ceiling", "loadgen_cores"):
            assert measured["min"][key] <= measured[key] <= measured["max"][key], (rung["name"], key)
            assert sorted(r[key] for r in measured["rounds"]) == [measured["min"][key], measured["max"][key]]
        assert measured["loadgen_cpu_s"] >= 0 and measured["loadgen_cores"] >= 0
        assert measured["generator"] == ("wrk" if shutil.which("wrk") else "python (httpx)")  # wrk when installed
    assert rungs["squeezer-compiled-fp32"]["serves"] == "fp32 on onnxruntime" and " on " in rungs["squeezer-optimized"]["serves"]
    runner_up = rungs["squeezer-runner-up"]
    assert runner_up.get("skipped") or "it chose" in runner_up["serves"], runner_up
    progress = [line.split(": ")[1] for line in done.stderr.splitlines() if "at 4 clients" in line]
    assert progress == [r["name"] for r in measured_rungs] * 2  # interleaved: A, B, C, A, B, C
    reference = results["rungs"][0]["results"]["embed-short"]["4"]
    assert reference["speedup"] == 1.0 and all(r["speedup"] == 1.0 for r in reference["rounds"])
    report = (out / "report.md").read_text()
    assert results["ceilings"]["embed-short"]["items_per_s"] > 0 and "optimized" in " ".join(results["ceilings"]["embed-short"]["all"])
    assert all(0 < r["results"]["embed-short"]["4"]["of_ceiling"] for r in measured_rungs) and "Ceiling: " in report
    assert report.count("| embed-short") == 0 and report.count("| squeezer-") == 4 and "## embed-short" in report
    cores = results["hardware"]["cpu"]["available_cpus"]
    assert "2 rounds interleaved" in report and "| loadgen CPU |" in report and f" of {cores} |" in report
    assert report in done.stdout
    for chart in ("ladder-embed-short.png", "curve-embed-short.png"):
        assert png_size(out / chart) > (300, 200), chart


def test_bench_climbs_the_chat_ladder_with_structured_output(tiny_decoder_path, tmp_path) -> None:
    """Generation rungs: the naive pipeline (answers only at 4 clients: it runs at one), the cached one, squeezer;
    greedy answers identical to `generate`'s, and every chat-json answer valid against its schema on squeezer."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "squeezer.cli", "bench", str(tiny_decoder_path("llama")), "--workload", "chat",
           "--workload", "chat-json", "--concurrency", "4", "--duration", "2", "--rounds", "1", "--out", str(out)]
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
            assert measured["loadgen_cores"] >= 0 and measured["generator"] == "python (httpx streams)"
    for name in ("naive-pipeline", "squeezer-pytorch"):  # greedy float32: the same tokens as generate's
        assert rungs[name]["accuracy"]["chat"] == 1.0
    for name in ("squeezer-pytorch", "squeezer-optimized"):  # a grammar: valid by construction
        assert rungs[name]["accuracy"]["chat-json"] == 1.0
    assert {p["name"] for p in results["peers"]} >= {"llama-server", "llama-cpp-python"}
    assert all(p["state"] in ("missing", "not driven") for p in results["peers"]), results["peers"]  # none on PATH here
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


def test_rounds_give_the_median_with_min_and_max_and_sum_the_errors() -> None:
    from squeezer.benchmark.rounds import paired, summary

    rounds = [{"rps": 10.0, "errors": 0, "generator": "wrk", "speedup": None},
              {"rps": 14.0, "errors": 2, "generator": "wrk", "speedup": 1.5},
              {"rps": 11.0, "errors": 1, "generator": "wrk", "speedup": 1.1}]
    found = summary(rounds)
    assert (found["rps"], found["min"]["rps"], found["max"]["rps"]) == (11.0, 10.0, 14.0)
    assert found["errors"] == 3 and found["generator"] == "wrk" and found["rounds"] == rounds
    assert found["speedup"] == 1.3 and found["min"]["speedup"] == 1.1  # the rounds that have one
    assert paired(rounds, [{"rps": 5.0}, {"rps": 0.0}, {"rps": 11.0}], "rps") == [2.0, None, 1.0]


def test_the_runner_up_is_the_fastest_passed_candidate_on_another_runtime(monkeypatch) -> None:
    from squeezer.benchmark import artifacts

    candidates = [{"name": "fused", "runtime": "onnxruntime", "verdict": "chosen", "speedup": 6.0},
                  {"name": "int8", "runtime": "onnxruntime", "verdict": "passed", "speedup": 5.0},
                  {"name": "ov-bf16", "runtime": "openvino", "verdict": "passed", "speedup": 2.0},
                  {"name": "ov-int8", "runtime": "openvino", "verdict": "failed", "speedup": 3.0},
                  {"name": "ov-fp32", "runtime": "openvino", "verdict": "passed", "speedup": 1.8}]
    monkeypatch.setattr(artifacts, "read_report", lambda path: {"candidates": candidates})
    assert artifacts.runner_up("any")["name"] == "ov-bf16"
    monkeypatch.setattr(artifacts, "read_report", lambda path: {"candidates": candidates[:2]})
    with pytest.raises(artifacts.Unavailable, match="no candidate on another runtime than onnxruntime"):
        artifacts.runner_up("any")


def test_the_report_says_why_a_rung_was_skipped() -> None:
    from squeezer.benchmark.report import markdown

    results = {"model": "m", "task": "feature-extraction", "workloads": {"embed-short": "one sentence"},
               "duration_s": 3.0, "rounds": 1, "hardware": {"cpu": {"model": "cpu", "available_cpus": 2}},
               "rungs": [{"name": "squeezer-runner-up", "description": "d", "results": {}, "skipped": "no candidate"}]}
    report = markdown(results)
    assert "| squeezer-runner-up | - | skipped: no candidate |" in report and "skipped: no candidate" in report
    row = next(line for line in report.splitlines() if line.startswith("| squeezer-runner-up"))
    assert row.count("|") == report.splitlines()[report.splitlines().index(row) - 2].count("|")
