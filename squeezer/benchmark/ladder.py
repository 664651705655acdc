"""The ladder: the same workloads through each rung, a real server process each, under the same load generator.

(a) out of the box: FastAPI calling SentenceTransformer.encode (or the transformers pipeline) per request;
(b) squeezer on PyTorch: dynamic batching, cached tokenization, no compile;
(c) squeezer serving what `optimize` chooses on this machine (gated, timed; reused from its cache).
Each rung's answers to the first requests are compared with rung (a)'s (minimum cosine), warm-up is excluded
for every rung alike, and each figure is given with its speed-up over rung (a).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from squeezer.benchmark.load import drive
from squeezer.benchmark.workloads import WORKLOADS, Workload
from squeezer.hardware import hardware_fingerprint
from squeezer.sources import resolve
from squeezer.testing.server import ServerProcess, free_port

CHECKED = 8  # requests whose answers are compared with rung (a)'s
PATH = "/models/bench"


class Baseline:
    """Rung (a): the out-of-the-box app under uvicorn, on the model's folder."""

    def __init__(self, spec: str, logs: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {**os.environ, "BASELINE_MODEL": str(resolve(spec).path), "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "uvicorn", "squeezer.benchmark.baseline:app", "--port", self.url.rsplit(":", 1)[1],
               "--log-level", "warning"]
        self._log = (logs / "baseline.log").open("w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the baseline app exited with {self.proc.returncode}")
            try:
                if httpx.post(self.url + PATH, json={"inputs": "ready?"}, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise TimeoutError("the baseline app did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self._log.close()


@dataclass(frozen=True)
class Rung:
    name: str
    description: str
    start: Callable[[str, Path], Any]  # (model spec, log folder) -> a server with url, wait_ready(), stop()


RUNGS = (
    Rung("out-of-the-box", "FastAPI calling the model per request", Baseline),
    Rung("squeezer-pytorch", "squeezer on PyTorch (batching, no compile)",
         lambda spec, logs: ServerProcess([f"bench={spec}", "--log-level", "warning"], logs)),
    Rung("squeezer-optimized", "squeezer serving what `optimize` chose here",
         lambda spec, logs: ServerProcess([f"bench={spec}", "--optimize", "--log-level", "warning"], logs)),
)


def min_cosine(ours: list[Any], reference: list[Any]) -> float | None:
    """The smallest cosine between answers, vector by vector (None when their shapes differ)."""
    worst = 1.0
    for a, b in zip(ours, reference):
        x, y = np.squeeze(np.asarray(a, dtype=np.float64)), np.squeeze(np.asarray(b, dtype=np.float64))  # [1, ...] is [...]
        if x.shape != y.shape:
            return None
        x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        cos = (x * y).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)
        worst = min(worst, float(cos.min()))
    return worst


def run(spec: str, workloads: Sequence[str], concurrency: Sequence[int], duration: float, logs: Path,
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Every rung through every workload at every concurrency; the results as one JSON-able record."""
    chosen: list[Workload] = [WORKLOADS[name] for name in workloads]
    bodies = {w.name: w.bodies(2000 if w.per_request == 1 else 200) for w in chosen}
    rungs: list[dict[str, Any]] = []
    reference: dict[str, list[Any]] = {}
    for rung in RUNGS:
        progress(f"{rung.name}: starting")
        server = rung.start(spec, logs)
        try:
            server.wait_ready(1800)
            record: dict[str, Any] = {"name": rung.name, "description": rung.description, "results": {}, "accuracy": {}}
            for w in chosen:
                answers = [httpx.post(server.url + PATH, json=b, timeout=120).json() for b in bodies[w.name][:CHECKED]]
                reference.setdefault(w.name, answers)
                record["accuracy"][w.name] = min_cosine(answers, reference[w.name])
                drive(server.url, PATH, bodies[w.name], max(concurrency), min(3.0, duration))  # warm-up, not counted
                for clients in concurrency:
                    progress(f"{rung.name}: {w.name} at {clients} clients for {duration:g}s")
                    measured = drive(server.url, PATH, bodies[w.name], clients, duration).as_dict()
                    record["results"].setdefault(w.name, {})[str(clients)] = {**measured, "items_per_s": measured["rps"] * w.per_request}
            rungs.append(record)
        finally:
            server.stop()
    for record in rungs:  # speed-ups over rung (a), workload by workload and concurrency by concurrency
        for name, by_clients in record["results"].items():
            for clients, measured in by_clients.items():
                base = rungs[0]["results"][name][clients]["rps"]
                measured["speedup"] = measured["rps"] / base if base else None
    return {"model": spec, "workloads": {w.name: w.description for w in chosen}, "concurrency": list(concurrency),
            "duration_s": duration, "hardware": hardware_fingerprint(), "rungs": rungs}
