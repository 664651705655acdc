"""Compiled artifacts under Ray (issue 17, item 3): `serve --ray --optimize` compiles once, in the `serve`
process, and every replica loads that one artifact instead of optimizing its own."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from squeezer.ray_serve.replica import REPLICA_HEADER
from squeezer.testing.server import ServerProcess
from tests.ray.conftest import RAY_FLAGS

pytestmark = pytest.mark.ray


def test_optimize_compiles_once_and_every_replica_serves_the_artifact(tiny_model, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {"RAY_USAGE_STATS_ENABLED": "0", "XDG_CACHE_HOME": str(cache)}
    proc = ServerProcess([f"m={tiny_model('bert', 'base')}", *RAY_FLAGS, "--optimize"], tmp_path, env)
    try:
        proc.wait_ready(600)
        backends: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while len(backends) < 2 and time.monotonic() < deadline:  # Ray's proxy learns of the replicas one by one
            info = httpx.get(proc.url + "/info", timeout=30)
            backends[info.headers[REPLICA_HEADER]] = info.json()["models"][0]["backend"]
        assert len(backends) == 2, backends
        assert set(backends.values()) <= {"onnxruntime", "openvino"}, backends  # the artifact, not torch
        assert httpx.post(proc.url + "/models/m", json={"inputs": "hello"}, timeout=30).status_code == 200
    finally:
        proc.stop()
    logs = proc.log_path.read_text()
    assert logs.count("chosen: ") == 1, logs[-3000:]  # one compile, reported once, for both replicas
    assert len(list((cache / "squeezer" / "optimize" / "served").iterdir())) == 1
