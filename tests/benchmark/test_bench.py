"""`squeezer bench --quick` (issue 16, item 9): it runs every rung on a real server and writes valid files. What
speed it reaches is for the reader, never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_quick_bench_runs_the_ladder_and_writes_its_report(tiny_model, tmp_path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "squeezer.cli", "bench", str(tiny_model("bert", "base")), "--quick", "--out", str(out)]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results["rungs"]] == ["out-of-the-box", "squeezer-pytorch", "squeezer-optimized"]
    assert results["hardware"]["cpu"]["flags"] and results["workloads"] == {"embed-short": "one sentence of 8 to 48 words"}
    for rung in results["rungs"]:
        measured = rung["results"]["embed-short"]["4"]
        assert measured["rps"] > 0 and measured["errors"] == 0 and measured["p50_ms"] <= measured["p99_ms"]
        assert rung["accuracy"]["embed-short"] >= 0.99  # the same answers as the out-of-the-box rung's
    assert results["rungs"][0]["results"]["embed-short"]["4"]["speedup"] == 1.0
    report = (out / "report.md").read_text()
    assert report.count("| embed-short") == 0 and report.count("| squeezer-") == 2 and "## embed-short" in report
    assert report in done.stdout
