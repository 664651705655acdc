"""Ray tests: `squeezer serve --ray` started as a real process on a local Ray instance (2 CPUs: one per replica),
driven over HTTP exactly like the single-process server. Run them alone with `pytest -m ray`."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from squeezer.ray_serve.replica import REPLICA_HEADER
from squeezer.testing.server import ServerProcess
from tests.helpers import encoder_specs, until

# One replica per CPU, one thread each; a short grace so shutting down never outlasts ServerProcess.stop().
RAY_FLAGS = ("--ray", "--replicas", "2", "--replica-cpus", "1", "--threads", "1", "--shutdown-grace", "5")


def start_on_ray(specs: Sequence[str], log_dir: Path, *flags: str) -> ServerProcess:
    """A `serve --ray` process, ready (every replica has loaded its models) or raising with its log."""
    proc = ServerProcess([*specs, *RAY_FLAGS, *flags], log_dir, {"RAY_USAGE_STATS_ENABLED": "0"})
    try:
        proc.wait_ready(timeout=240)
    except Exception:
        proc.stop()
        raise
    return proc


def replica_pids(server: ServerProcess) -> list[int]:
    """The server's Ray Serve replica processes: its descendants that Ray names `ray::ServeReplica:...`."""
    table = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=True).stdout
    rows = [line.split(None, 2) for line in table.splitlines() if len(line.split(None, 2)) == 3]
    family, grew = {server.proc.pid}, True
    while grew:
        children = {int(pid) for pid, ppid, _ in rows if int(ppid) in family}
        grew = not children <= family
        family |= children
    return [int(pid) for pid, _, args in rows if int(pid) in family and args.startswith("ray::ServeReplica:")]


def until_both_routed(server: ServerProcess) -> set[str]:
    """Wait until Ray's proxy routes to both replicas (it learns of them one by one), as `/health`'s replica
    header shows; their names."""
    seen: set[str] = set()

    def both_routed() -> bool:
        seen.add(httpx.get(server.url + "/health").headers[REPLICA_HEADER])
        return len(seen) == 2

    asyncio.run(until(both_routed, 60, every=0.5))
    return seen


@pytest.fixture(scope="module")  # module scope: never two Ray instances at once on the test machine
def server(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """tests/api/test_hf_api.py's server on two replicas: MiniLM first (the TEI routes' default), then a tiny
    model per encoder task."""
    proc = start_on_ray(encoder_specs(tiny_model), tmp_path_factory.mktemp("ray-logs"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def gen_server(tiny_decoder_path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """tests/api/test_generation_api.py's server on two replicas (tiny/llama first: the TGI routes' default)."""
    specs = [f"tiny/llama={tiny_decoder_path('llama')}", f"tiny/gpt2={tiny_decoder_path('gpt2')}"]
    proc = start_on_ray(specs, tmp_path_factory.mktemp("ray-gen-logs"))
    yield proc
    proc.stop()


@pytest.fixture
def start_ray(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """start_ray(specs, *flags) -> its own `serve --ray` process, stopped after the test."""
    started: list[ServerProcess] = []

    def run(specs: Sequence[str], *flags: str) -> ServerProcess:
        proc = start_on_ray(specs, tmp_path, *flags)
        started.append(proc)
        return proc

    yield run
    for proc in started:
        if proc.proc.poll() is None:
            proc.stop()
