"""A server peer (squeezer.benchmark.peers) as a real process beside the ladder's rungs: started from its command
template on the model's files with the same thread count squeezer's backends take, held up like every rung, and
spoken to through its routes (squeezer.benchmark.routes), so the load generator and the agreement check are the
ladder's own.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from squeezer.benchmark.artifacts import Unavailable
from squeezer.benchmark.peers import SLOT_CONTEXT, Found
from squeezer.benchmark.routes import Route, spoken
from squeezer.benchmark.workloads import Workload
from squeezer.hardware import available_cpus
from squeezer.sources import resolve
from squeezer.testing.server import free_port


def filled(found: Found, spec: str, port: int, slots: int) -> dict[str, str]:
    """Each placeholder's value for this run (see peers.Launch); {gguf} raises Unavailable for a model that is
    not a GGUF file, so a llama.cpp peer is reported skipped with why, not started on files it cannot read."""
    source = resolve(spec)
    gguf = str(source.path / source.gguf_file) if source.gguf_file else None
    launch = found.peer.launch
    assert launch is not None and found.exe is not None
    if gguf is None and any("{gguf}" in part for part in (*launch.command, *launch.env.values())):
        raise Unavailable(f"{found.peer.name} runs GGUF files only, and this model is a folder: give the bench a .gguf file")
    return {"exe": found.exe, "python": sys.executable, "model": gguf or str(source.path), "gguf": gguf or "",
            "port": str(port), "threads": str(available_cpus()), "slots": str(slots),
            "context": str(slots * SLOT_CONTEXT), "slot_context": str(SLOT_CONTEXT)}


class PeerServer:
    """One peer's server on a free loopback port, its output in the run's log folder. `facts` (for the results)
    say how it was started; it runs in its own session so that stopping it ends every process it began."""

    def __init__(self, found: Found, spec: str, logs: Path, slots: int) -> None:
        launch = found.peer.launch
        assert launch is not None
        self.name, self.launch = found.peer.name, launch
        port = free_port()
        values = filled(found, spec, port, slots)
        self.url = f"http://127.0.0.1:{port}"
        command = [part.format(**values) for part in launch.command]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", **{k: v.format(**values) for k, v in launch.env.items()}}
        self.facts: dict[str, object] = {"command": shlex.join(command), "threads": int(values["threads"])}
        if any("{slots}" in part for part in launch.command):
            self.facts["slots"] = slots
        self.log_path = logs / f"peer-{self.name}.log"
        self._log = self.log_path.open("w")
        try:
            self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except OSError as exc:
            self._log.close()
            raise Unavailable(f"{self.name} did not start: {exc}") from None

    def route(self, workload: Workload) -> Route:
        return spoken(workload, self.launch.routes[workload.name], self.launch.dialect)

    def wait_ready(self, timeout: float) -> None:
        """Until GET `ready` answers 200 (a peer answers 503, or refuses connections, while it loads); Unavailable
        where it exits or never does, with the last line it wrote."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"{self.name} exited with {self.proc.returncode}: {self._said()}")
            try:
                if httpx.get(self.url + self.launch.ready, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise Unavailable(f"{self.name} did not answer GET {self.launch.ready} within {timeout:g} s: {self._said()}")

    def _said(self) -> str:
        self._log.flush()
        lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1][-300:] if lines else f"no output (see {self.log_path})"

    def stop(self) -> None:
        """SIGTERM to its process group; then SIGKILL to what is left of it (a peer that does not drain within
        30 s, or workers it began): no process of a peer outlives the run."""
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                pass
        self._log.close()
