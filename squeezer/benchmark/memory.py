"""Whether one more rung's server fits in memory beside those already up.

Rounds are interleaved across rungs, so every rung's server is held up at once: an idle server costs no CPU
(measured: about 0.001 cores each), but each holds its model in memory, and four copies of a large causal LM may
not fit where one did. Before each start the ladder asks here; where the next would not fit, the servers up are
measured and stopped first, and the rounds are interleaved within each such group only (the results say so).
"""

from __future__ import annotations

from pathlib import Path

HEADROOM = 2.0  # the next server may need as much as the largest one up, and as much again while it loads


def _kib(path: Path, field: str) -> int | None:
    """A `field:   N kB` line of a /proc file, in KiB; None where there is no such file (not Linux) or line."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def resident_mib(pid: int) -> float | None:
    """A process's resident memory in MiB (None where it cannot be read)."""
    kib = _kib(Path(f"/proc/{pid}/status"), "VmRSS")
    return None if kib is None else kib / 1024


def available_mib() -> float | None:
    """Memory the kernel could give a new process without swapping, in MiB (None where it cannot be read)."""
    kib = _kib(Path("/proc/meminfo"), "MemAvailable")
    return None if kib is None else kib / 1024


def room_for_another(pids: list[int]) -> bool:
    """Whether a server as large as the largest of `pids` fits, with HEADROOM, in what is available; True where
    it cannot be told (no /proc), as then nothing better than trying is known."""
    sizes = [size for size in map(resident_mib, pids) if size is not None]
    available = available_mib()
    return not sizes or available is None or available >= HEADROOM * max(sizes)
