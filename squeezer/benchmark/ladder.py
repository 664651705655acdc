"""The ladder: the same workloads through each rung, a real server process each, under the same load generator.

(a) out of the box: FastAPI calling SentenceTransformer.encode, the transformers pipeline or `generate` per
request; for generation also (a0) `generate` without its KV cache, at one client (it is the naive baseline);
(b) squeezer on PyTorch: dynamic or continuous batching, cached tokenization, no compile;
(c) squeezer serving what `optimize` chooses on this machine (gated, timed; reused from its cache).
Each rung's answers to the first requests are compared with rung (a)'s, warm-up is excluded for every rung
alike, and each figure is given with its speed-up over rung (a) and over the rung before it.
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

from squeezer.benchmark.answers import agreement, collect
from squeezer.benchmark.ceiling import best_ceiling, chosen_artifact
from squeezer.benchmark.load import drive
from squeezer.benchmark.peers import peer_status
from squeezer.benchmark.streams import drive_chat
from squeezer.benchmark.workloads import WORKLOADS, Workload, fitting
from squeezer.detect import configured_task
from squeezer.hardware import hardware_fingerprint
from squeezer.sources import resolve
from squeezer.testing.server import ServerProcess, free_port

REFERENCE = "out-of-the-box"
CEILING_TEXTS = 1024  # texts per in-process ceiling run: 32 batches of 32


class Baseline:
    """Rungs (a) and (a0): the out-of-the-box app under uvicorn, on the model's files."""

    def __init__(self, spec: str, task: str, logs: Path, cache: bool = True) -> None:
        source = resolve(spec)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.probe = ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}) \
            if task == "text-generation" else ("/models/bench", {"inputs": "ready?"})
        env = {**os.environ, "BASELINE_MODEL": str(source.path), "BASELINE_GGUF": source.gguf_file or "",
               "BASELINE_TASK": task, "BASELINE_NO_CACHE": "0" if cache else "1", "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "uvicorn", "squeezer.benchmark.baseline:app", "--port", self.url.rsplit(":", 1)[1],
               "--log-level", "warning"]
        self._log = (logs / f"baseline-{'cached' if cache else 'naive'}.log").open("w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the baseline app exited with {self.proc.returncode} (see {self._log.name})")
            try:
                status = httpx.post(self.url + self.probe[0], json=self.probe[1], timeout=60).status_code
            except httpx.HTTPError:
                time.sleep(0.3)
                continue
            if status != 200:
                raise RuntimeError(f"the baseline app answered {status} (see {self._log.name})")
            return
        raise TimeoutError("the baseline app did not start")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL: uvicorn drains what it accepted, and after a heavy sweep the out-of-the-box app
        may hold minutes of queued requests that wrk has long given up on."""
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        self._log.close()


@dataclass(frozen=True)
class Rung:
    name: str
    description: str
    start: Callable[[str, str, Path], Any]  # (model spec, task, log folder) -> a server with url, wait_ready(), stop()
    generation_only: bool = False
    max_clients: int | None = None  # the naive rung runs at one client: more would take hours, and say nothing new


RUNGS = (
    Rung("naive-pipeline", "transformers generate without its KV cache, per request",
         lambda spec, task, logs: Baseline(spec, task, logs, cache=False), generation_only=True, max_clients=1),
    Rung(REFERENCE, "FastAPI calling the model per request", Baseline),
    Rung("squeezer-pytorch", "squeezer on PyTorch (batching, no compile)",
         lambda spec, task, logs: ServerProcess([f"bench={spec}", "--log-level", "warning"], logs)),
    Rung("squeezer-optimized", "squeezer serving what `optimize` chose here",
         lambda spec, task, logs: ServerProcess([f"bench={spec}", "--optimize", "--log-level", "warning"], logs)),
)


def measure(server: Any, workload: Workload, bodies: list[dict[str, Any]], clients: int, seconds: float) -> dict[str, Any]:
    """One figure; then one more request, answered before the next figure starts, so requests a load generator
    gave up on (the out-of-the-box app computes them anyway) do not weigh on the next one."""
    if workload.generates:
        measured = drive_chat(server.url, workload.path, bodies, clients, seconds).as_dict()
    else:
        measured = drive(server.url, workload.path, bodies, clients, seconds, light=workload.per_request == 1).as_dict()
    collect(server.url, workload, bodies[:1])
    return {**measured, "items_per_s": measured["rps"] * workload.per_request}


def run_rung(rung: Rung, spec: str, task: str, chosen: list[Workload], sweeps: dict[str, list[int]], duration: float,
             logs: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """One rung through every workload it runs: its answers to the checked requests, then the load sweep."""
    bodies = {w.name: w.bodies(2000 if w.per_request == 1 and not w.generates else 200) for w in chosen}
    record: dict[str, Any] = {"name": rung.name, "description": rung.description, "results": {}, "answers": {}}
    progress(f"{rung.name}: starting")
    server = rung.start(spec, task, logs)
    try:
        server.wait_ready(1800)
        for w in chosen:
            record["answers"][w.name] = collect(server.url, w, bodies[w.name][:w.checked])
            clients = [c for c in sweeps[w.name] if rung.max_clients is None or c <= rung.max_clients]
            if not w.generates and clients:
                measure(server, w, bodies[w.name], max(clients), min(3.0, duration))  # warm-up, not counted
            for c in clients:
                progress(f"{rung.name}: {w.name} at {c} clients for {duration:g}s")
                record["results"].setdefault(w.name, {})[str(c)] = measure(server, w, bodies[w.name], c, duration)
    finally:
        server.stop()
    return record


def compare(rungs: list[dict[str, Any]], chosen: list[Workload]) -> None:
    """Accuracy against the reference rung's answers; speed-ups over it and over the rung before, per figure."""
    reference = next(r for r in rungs if r["name"] == REFERENCE)
    for w in chosen:
        key = "tokens_per_s" if w.generates else "rps"
        before: dict[str, float] = {}
        for record in rungs:
            record.setdefault("accuracy", {})[w.name] = agreement(w, record["answers"][w.name], reference["answers"][w.name])
            for clients, measured in record["results"].get(w.name, {}).items():
                base = reference["results"].get(w.name, {}).get(clients, {}).get(key)
                measured["speedup"] = measured[key] / base if base else None
                measured["vs_previous"] = measured[key] / before[clients] if before.get(clients) else None
                before[clients] = measured[key]


def measure_ceilings(spec: str, chosen: list[Workload], rungs: list[dict[str, Any]], logs: Path,
                     progress: Callable[[str], None]) -> dict[str, Any]:
    """Each encoder workload's in-process ceiling (squeezer.benchmark.ceiling), and every figure's share of it."""
    if not chosen:
        return {}
    progress("the in-process ceiling: PyTorch and the artifact optimize chooses")
    runtimes = {"pytorch": spec}
    artifact = chosen_artifact(spec, logs / "ceiling-artifact", logs / "ceiling-optimize.log")
    if artifact:
        runtimes["optimized"] = artifact
    found = {}
    for w in chosen:
        texts = [t for body in w.bodies(CEILING_TEXTS // w.per_request) for t in _texts(body["inputs"])]
        found[w.name] = best_ceiling(runtimes, texts)
        for record in rungs:
            for measured in record["results"].get(w.name, {}).values():
                measured["of_ceiling"] = measured["items_per_s"] / found[w.name]["items_per_s"]
    return found


def _texts(inputs: str | list[str]) -> list[str]:
    return [inputs] if isinstance(inputs, str) else inputs


def model_task(spec: str) -> str:
    """The task the model serves, read from its files without loading it."""
    return configured_task(resolve(spec)) or "feature-extraction"


def run(spec: str, workloads: Sequence[str] | None, concurrency: Sequence[int] | None, duration: float, logs: Path,
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Every rung through every workload at every concurrency; the results as one JSON-able record."""
    task = model_task(spec)
    fits = fitting(task)
    unfit = [name for name in workloads or [] if name not in fits]
    if unfit:
        raise ValueError(f"{', '.join(unfit)} cannot run on a {task} model; this one runs {', '.join(fits) or 'none'}")
    chosen = [WORKLOADS[name] for name in workloads or fits]
    sweeps = {w.name: list(concurrency or w.concurrency) for w in chosen}
    generates = any(w.generates for w in chosen)
    rungs = [run_rung(rung, spec, task, chosen, sweeps, duration, logs, progress)
             for rung in RUNGS if generates or not rung.generation_only]
    compare(rungs, chosen)
    ceilings = measure_ceilings(spec, [w for w in chosen if not w.generates], rungs, logs, progress)
    for record in rungs:
        del record["answers"]  # compared; the vectors themselves are no figure
    return {"model": spec, "task": task, "workloads": {w.name: w.description for w in chosen}, "concurrency": sweeps,
            "duration_s": duration, "hardware": hardware_fingerprint(), "rungs": rungs, "ceilings": ceilings,
            "peers": peer_status([w.name for w in chosen])}
