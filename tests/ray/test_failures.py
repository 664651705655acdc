"""Faults as the single process reports them: a model that cannot load fails the deployment and says why (Ray's
health check never puts the replica in rotation); without Ray, `--ray` says how to install it. The 4xx answers
to bad input through Ray are tests/api's own, in test_parity.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from squeezer.testing.server import ServerProcess
from tests.ray.conftest import RAY_FLAGS

pytestmark = pytest.mark.ray


def test_a_replica_that_cannot_load_its_model_says_why(tiny_model, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model("bert", "base"), broken)
    (broken / "model.safetensors").unlink()  # resolves (it has a config.json), fails to load in the replica
    proc = ServerProcess([f"broken={broken}", *RAY_FLAGS, "--replicas", "1"], tmp_path, {"RAY_USAGE_STATS_ENABLED": "0"})
    try:
        code = proc.proc.wait(timeout=300)
    finally:
        if proc.proc.poll() is None:
            proc.stop()
    logs = proc.log_path.read_text()
    assert code == 1, logs[-3000:]
    assert "models failed to load: broken:" in logs, logs[-3000:]


def test_serve_ray_without_ray_says_how_to_install(tiny_model) -> None:
    without_ray = "import sys; sys.modules['ray'] = None; from squeezer.cli import main; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", without_ray, "serve", "--ray", str(tiny_model("bert", "base"))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "pip install 'squeezer[ray]'" in result.stderr, result.stderr
