"""A real `squeezer serve` process on a free loopback port, for tests and benchmarks that go through HTTP."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """Starts the CLI in a subprocess; `url` is its base URL; logs go to a file for failure reports."""

    def __init__(
        self, args: Sequence[str], log_dir: Path, env: dict[str, str] | None = None, launcher: Sequence[str] = ("-m", "squeezer.cli")
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"server-{self.port}.log"
        # a fixed backend to test or measure: no compile in the background unless a test asks (flag or env)
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "SQUEEZER_OPTIMIZE_IN_BACKGROUND": "0", **(env or {})}
        cmd = [sys.executable, *launcher, "serve", *args, "--port", str(self.port)]
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=full_env)

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Wait until /health says no model is loading (the process must stay alive meanwhile)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text()[-5000:]

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        finally:
            self._log.close()


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (`name{labels} value`), 0 when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{wanted}}}" if labels else name
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0
