"""The ladder's rungs, as data: each a real server process, started the way a user would start it.

(a0) for generation, `generate` without its KV cache, at one client (the naive baseline); (a) out of the box:
FastAPI calling SentenceTransformer.encode, the transformers pipeline or `generate` per request; (b) squeezer on
PyTorch: dynamic or continuous batching, cached tokenization, no compile; for encoders (c) squeezer serving the
plain fp32 ONNX graph, which separates what the export alone gives from what fusion and quantization add;
(d) squeezer serving what `optimize` chooses on this machine, and for encoders (d') the runner-up: the fastest
candidate on another runtime, what a machine without the winner's runtime would serve. After them, each peer
driven in this run (squeezer.benchmark.peers): a rung marked `peer`, measured and checked the same way, and set
against squeezer's best rung rather than taken as a step of the ladder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from squeezer.artifact import read_report
from squeezer.benchmark.artifacts import Unavailable, build, runner_up
from squeezer.benchmark.peer_server import PeerServer
from squeezer.benchmark.peers import Found
from squeezer.benchmark.workloads import Workload
from squeezer.sources import resolve
from squeezer.testing.server import ServerProcess, free_port

REFERENCE = "out-of-the-box"
# The profile the optimized rung is compiled for, by task (else latency): a chat server's work is many streams
# decoded together (what chat at 16 clients measures), and the throughput profile times candidates that way.
PROFILES = {"text-generation": "throughput"}
ENCODERS, GENERATION = frozenset({"encoder"}), frozenset({"generation"})
EVERY_KIND = ENCODERS | GENERATION


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


def serving(artifact: str) -> str:
    """What an artifact serves, for the results: its recipe and the runtime that runs it."""
    report = read_report(artifact)
    return f"{report['chosen']} on {report['graph'].get('runtime', 'onnxruntime')}"


class Optimized(ServerProcess):
    """`squeezer serve --optimize`, as a user starts it; `facts`, read once it is up, names the artifact it serves
    (the one `squeezer optimize` then answers from its cache)."""

    def __init__(self, spec: str, task: str, logs: Path) -> None:
        self.spec, self.logs, self.profile = spec, logs, PROFILES.get(task, "latency")
        super().__init__([f"bench={spec}", "--optimize", "--optimize-profile", self.profile, "--log-level", "warning"], logs)

    @property
    def facts(self) -> dict[str, str]:
        try:
            return {"serves": f"{serving(build(self.spec, self.logs, profile=self.profile))}, compiled for {self.profile}"}
        except Unavailable:  # a causal LM the decoder graph cannot express: served on PyTorch, nothing to name
            return {}


class Compiled(ServerProcess):
    """squeezer serving one artifact `optimize` built from a single recipe, the one `pick` names; `facts` says
    which, for the results. Building may raise artifacts.Unavailable: the rung is then reported skipped."""

    def __init__(self, spec: str, logs: Path, pick: Callable[[str, Path], tuple[str, str]]) -> None:
        recipe, why = pick(spec, logs)
        artifact = build(spec, logs, recipe)
        self.facts = {"serves": serving(artifact) + why}
        super().__init__([f"bench={artifact}", "--log-level", "warning"], logs)


def plain_fp32(spec: str, logs: Path) -> tuple[str, str]:
    """The exported graph as it is: no fusion, no quantization."""
    return "fp32", ""


def second_runtime(spec: str, logs: Path) -> tuple[str, str]:
    """The fastest passed candidate on another runtime than the chosen artifact's (its report has them all)."""
    chosen = build(spec, logs)
    found = runner_up(chosen)
    return found["name"], f" ({found['speedup']:.2f}x PyTorch in optimize's timing; it chose {serving(chosen)})"


def prefix_cache(url: str) -> str:
    """What a squeezer server reuses across chat requests, as its /models says (the prefix cache is sized per
    model, and only compiled decoders have one)."""
    try:
        sizes = [m.get("prefix_cache_mb", 0) for m in httpx.get(url + "/models", timeout=30).json()]
    except (httpx.HTTPError, ValueError, AttributeError):
        return "not known (/models did not say)"
    if any(sizes):
        return f"prefix cache, {max(sizes)} MiB (finished sequences' keys and values, reused by prompts that begin the same way)"
    return "none (squeezer's prefix cache is for compiled decoders)"


def no_cache(url: str) -> str:
    return "none (`generate` runs every prompt whole)"


@dataclass(frozen=True)
class Rung:
    name: str
    description: str
    start: Callable[[str, str, Path], Any]  # (model spec, task, log folder) -> a server with url, wait_ready(), stop()
    kinds: frozenset[str] = EVERY_KIND  # the workloads it runs: "encoder", "generation"
    max_clients: int | None = None  # the naive rung runs at one client: more would take hours, and say nothing new
    prompt_cache: Callable[[str], str] = prefix_cache  # (its url) -> what it reuses across chat requests
    workloads: frozenset[str] | None = None  # the workloads it runs, where not every one of its kinds (a peer's routes)
    peer: bool = False  # another system beside squeezer's rungs, not a rung of its ladder

    def runs(self, workload: Workload) -> bool:
        """Whether this rung takes `workload`: of its kinds, and among its routes where it is a peer."""
        return ("generation" if workload.generates else "encoder") in self.kinds and \
            (self.workloads is None or workload.name in self.workloads)


RUNGS = (
    Rung("naive-pipeline", "transformers generate without its KV cache, per request",
         lambda spec, task, logs: Baseline(spec, task, logs, cache=False), GENERATION, max_clients=1, prompt_cache=no_cache),
    Rung(REFERENCE, "FastAPI calling the model per request", Baseline, prompt_cache=no_cache),
    Rung("squeezer-pytorch", "squeezer on PyTorch (batching, no compile)",
         lambda spec, task, logs: ServerProcess([f"bench={spec}", "--log-level", "warning"], logs)),
    Rung("squeezer-compiled-fp32", "squeezer serving the plain fp32 ONNX export (`optimize --recipes fp32`)",
         lambda spec, task, logs: Compiled(spec, logs, plain_fp32), ENCODERS),
    Rung("squeezer-optimized", "squeezer serving what `optimize` chose here",
         Optimized),
    Rung("squeezer-runner-up", "squeezer serving the fastest passed candidate on another runtime than optimize's choice",
         lambda spec, task, logs: Compiled(spec, logs, second_runtime), ENCODERS),
)
# squeezer's rung each peer is set against ("squeezer over the peer"), the first of these that was measured
BEST = ("squeezer-optimized", "squeezer-pytorch")


def peer_rungs(driven: list[Found], workloads: list[Workload], sweeps: dict[str, list[int]]) -> list[Rung]:
    """A rung for each peer driven in this run, on the workloads it has routes for; `slots` (llama.cpp's `-np`)
    is the most clients its workloads' sweeps reach, so every client has its own slot at every level."""
    rungs = []
    for found in driven:
        launch = found.peer.launch
        assert launch is not None
        runs = [w for w in workloads if w.name in found.routes([w.name])]
        slots = max(c for w in runs for c in sweeps[w.name])
        rungs.append(Rung(found.peer.name, launch.description + (f"; {launch.note}" if launch.note else ""),
                          lambda spec, task, logs, found=found, slots=slots: PeerServer(found, spec, logs, slots),
                          prompt_cache=lambda url, said=launch.prompt_cache: said,
                          workloads=frozenset(w.name for w in runs), peer=True))
    return rungs
