"""Hardware probing: the cores this process may use, the CPU's model and instruction-set flags, NVIDIA GPUs.

Backends size their thread pools with `available_cpus()`; the compiler stores `hardware_fingerprint()` in
every artifact report and optimize-cache key, because a timing or an int8 choice holds only on the hardware it
was measured on. It is a module of its own, apart from the artifact format, because serving code needs the
core count without anything about reports, and the probes read only the OS: /proc/cpuinfo, the cgroup CPU
quota, CPU affinity and `nvidia-smi`. It imports nothing from squeezer, nor torch nor onnxruntime.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

# CPU features that change which kernels ONNX Runtime (and int8 quantization) can use.
CPU_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16", "asimd", "asimddp", "sve", "i8mm",
)


# Units a compiled graph may need to run as it was measured: (CPU flags, any one of them; why). A recipe that needs
# them is skipped where they are missing, and an artifact chosen with them is refused there (`artifact.check_cpu`).
BF16_UNITS = (("amx_bf16", "avx512_bf16"), "needs a CPU with bf16 units (AMX or AVX-512 BF16)")
# fp16 arithmetic: AVX-512 FP16 (Intel Xeons from Sapphire Rapids on), AMX FP16 (from Granite Rapids on).
FP16_UNITS = (("amx_fp16", "avx512_fp16"), "needs a CPU with fp16 arithmetic units (AVX-512 FP16 or AMX FP16)")
INT8_DOT_UNITS = (("avx512_vnni", "avx_vnni", "amx_int8", "asimddp"),
                  "needs int8 dot-product units (VNNI, AMX or Arm's dot product): without them ONNX Runtime adds "
                  "u8 x s8 products in pairs in 16 bits, which full-range s8 weights saturate (7-bit weights, or u8 "
                  "ones, do not)")
NO_UNITS: tuple[tuple[str, ...], str] = ((), "")


def available_cpus() -> int:
    """Cores this process may really use: CPU affinity, capped by a cgroup CPU quota (containers).

    `os.cpu_count()` reports the host's cores, which oversubscribes a container limited to two of them;
    too many threads there is slower than the right number, so both limits are read.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else max(1, cores)


def _cgroup_quota() -> float | None:
    """CPU quota in cores from cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us`), None when unlimited."""
    try:
        fields = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if fields and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def cpu_info() -> dict[str, Any]:
    """CPU model and the instruction-set flags that matter to inference kernels."""
    model, flags = "", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model") and not model:
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    return {"model": model, "arch": platform.machine(), "flags": sorted(f for f in CPU_FLAGS if f in flags),
            "logical_cpus": os.cpu_count() or 1, "available_cpus": available_cpus()}


def gpus() -> list[str]:
    """NVIDIA GPUs as `name (driver)`, from nvidia-smi; empty without one (no torch, no CUDA import)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def hardware_fingerprint() -> dict[str, Any]:
    """What a measurement depends on: CPU, cores, GPUs, OS. Stored in reports and in cache keys."""
    return {"cpu": cpu_info(), "gpus": gpus(), "os": f"{platform.system()} {platform.release()}",
            "python_impl": sys.implementation.name}
