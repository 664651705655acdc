"""The load generator: wrk (a compiled client: a Python one caps near 300 requests/s on 2 cores and measures
itself), else a Python closed loop, named in the results so a reader knows which figures to trust.

Every client sends the next body as soon as its answer arrives; only 2xx answers count, errors are reported.
The load generator shares the machine with the server, so each figure carries the CPU it took itself (wrk's from
its rusage, the Python client's as this process's CPU time), in cores: a reader sees what the server was left.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
WRK_SCRIPT = """
local bodies = {}
for line in io.lines(os.getenv("BODIES")) do bodies[#bodies + 1] = line end
local i = math.random(#bodies)
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", os.getenv("TARGET_PATH"), {["Content-Type"] = "application/json"}, bodies[i])
end
"""


@dataclass(frozen=True)
class Measured:
    """One run of load: requests/s that succeeded, latency percentiles (ms), failed requests, and by what."""

    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    generator: str
    tokens_per_s: float | None = None  # generation only: new tokens per second, all streams together
    stream_tokens_per_s: float | None = None  # generation only: median of each answer's own decode rate
    ttft_p50_ms: float | None = None  # generation only: time to the first token (the whole answer when unstreamed)
    loadgen_cpu_s: float | None = None  # CPU seconds the load generator itself used (user + system)
    loadgen_cores: float | None = None  # the same over the run's wall time: cores it kept busy on average

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def own_cpu(run: Callable[[], Measured]) -> Measured:
    """`run()` (a load generator in this process) with the CPU this process spent meanwhile, every thread's."""
    cpu, wall = time.process_time(), time.perf_counter()
    measured = run()
    return charged(measured, time.process_time() - cpu, time.perf_counter() - wall)


def charged(measured: Measured, cpu_s: float, wall_s: float) -> Measured:
    """`measured` with the load generator's CPU: seconds, and cores kept busy over `wall_s`."""
    return replace(measured, loadgen_cpu_s=cpu_s, loadgen_cores=cpu_s / wall_s if wall_s > 0 else None)


def drive(url: str, path: str, bodies: list[dict[str, Any]], clients: int, seconds: float, light: bool = True) -> Measured:
    """`clients` concurrent clients posting `bodies` in turn to `url + path` for `seconds`.

    wrk counts only what ends within `seconds` and drops the rest, which is right for light requests and wrong for
    heavy ones (32 passages take seconds each under load: a short run would count none). `light=False` takes the
    Python client, whose requests begun before the deadline run to their end and count.
    """
    if light and shutil.which("wrk"):
        return _wrk(url, path, bodies, clients, seconds)
    return own_cpu(lambda: asyncio.run(_python(url, path, bodies, clients, seconds)))


def _wrk(url: str, path: str, bodies: list[dict[str, Any]], clients: int, seconds: float) -> Measured:
    with tempfile.TemporaryDirectory() as tmp:
        script, lines = Path(tmp) / "post.lua", Path(tmp) / "bodies.jsonl"
        script.write_text(WRK_SCRIPT)
        lines.write_text("\n".join(json.dumps(b) for b in bodies) + "\n")
        cmd = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "60s", "-s", str(script), url]
        out, cpu_s, wall_s = run_counted(cmd, {**os.environ, "BODIES": str(lines), "TARGET_PATH": path})
    found = dict(re.findall(r"^\s+(50|90|99)%\s+([\d.]+\w+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    failed = int(errors.group(1)) if errors else 0
    requests, spent = (int(total.group(1)), _ms(total.group(2) + total.group(3)) / 1000) if total else (0, seconds)
    measured = Measured((requests - failed) / spent, *(_ms(found.get(k, "0ms")) for k in ("50", "90", "99")), failed, "wrk")
    return charged(measured, cpu_s, wall_s)


def run_counted(cmd: list[str], env: dict[str, str]) -> tuple[str, float, float]:
    """Run `cmd` to its end: (its stdout, the CPU seconds it used, wall seconds). Reaped with os.wait4, which
    gives that one child's rusage: a delta of RUSAGE_CHILDREN would also take in any other child reaped meanwhile."""
    wall = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()  # type: ignore[union-attr]  # to EOF: wrk has exited or is exiting
    proc.stdout.close()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd, out)
    return out, usage.ru_utime + usage.ru_stime, time.perf_counter() - wall


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


async def closed_loop(url: str, bodies: list[dict[str, Any]], clients: int, seconds: float,
                      send: Callable[[Any, dict[str, Any]], Awaitable[T | None]],
                      limits: Any = None) -> tuple[list[T], int, float]:
    """`clients` clients each sending the next body as soon as its answer is in, until `seconds` have passed
    (what each began runs to its end); (the answers, failed requests, wall seconds). `send` answers None for a
    failure. Shared by the plain and the chat load generators."""
    import httpx

    answers: list[T] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(k: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        i = k
        while time.perf_counter() < deadline:
            answer = await send(http, bodies[i % len(bodies)])
            if answer is None:
                errors += 1
            else:
                answers.append(answer)
            i += clients

    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits or httpx.Limits(max_connections=clients + 4)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(k, http) for k in range(clients)))
        return answers, errors, time.perf_counter() - started


async def _python(url: str, path: str, bodies: list[dict[str, Any]], clients: int, seconds: float) -> Measured:
    import httpx

    async def post(http: Any, body: dict[str, Any]) -> float | None:
        start = time.perf_counter()
        try:
            response = await http.post(path, json=body)
        except httpx.TransportError:  # a dropped connection is a failed request, counted beside the figure
            return None
        return (time.perf_counter() - start) * 1000 if response.status_code < 300 else None

    latencies, errors, spent = await closed_loop(url, bodies, clients, seconds, post)
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return Measured(len(latencies) / spent, cuts[49], cuts[89], cuts[98], errors, "python (httpx)")
