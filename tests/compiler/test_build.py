"""Building OpenVINO candidates reports nothing to anyone: the converter's and NNCF's usage telemetry (on by default
outside CI, sent from forked processes that hung `squeezer optimize`'s exit off the internet) is declined."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_openvino_candidates_send_no_telemetry_and_the_compile_exits(tiny_model, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    ci = ("CI", "TF_BUILD", "JENKINS_URL", "NNCF_CI", "NNCF_DEV")  # each of which would turn the reports off anyway
    env = {k: v for k, v in os.environ.items() if k not in ci}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "squeezer.cli", "optimize", str(tiny_model("bert", "base")),
           "--out", str(tmp_path / "out"), "--recipes", "ov-fp32,ov-int8", "--no-cache", "--max-accuracy-loss", "0.5"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, start_new_session=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ov-int8" in done.stdout and (tmp_path / "out" / "squeezer.json").is_file()
    assert not (home / "intel").exists(), sorted(p.name for p in (home / "intel").iterdir())  # no client id, no stats
