"""Hardware probing: the cores a process may use, and the fingerprint stored in reports and cache keys."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from squeezer import hardware
from squeezer.hardware import CPU_FLAGS, available_cpus, cpu_info, gpus, hardware_fingerprint

linux_only = pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="reads /proc/cpuinfo (Linux)")


def _proc_cpuinfo(*keys: str) -> str:
    """The value of the first /proc/cpuinfo line whose key is one of `keys` ("" when none)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value.strip()
    return ""


def test_available_cpus_is_between_one_and_the_host_cores() -> None:
    cores = available_cpus()
    assert isinstance(cores, int)
    assert 1 <= cores <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert cores <= len(os.sched_getaffinity(0))


def test_available_cpus_respects_affinity_and_cgroup_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    affinity = len(os.sched_getaffinity(0))
    monkeypatch.setattr(hardware, "_cgroup_quota", lambda: None)
    assert available_cpus() == affinity
    monkeypatch.setattr(hardware, "_cgroup_quota", lambda: 0.5)  # half a core: still one thread
    assert available_cpus() == 1
    monkeypatch.setattr(hardware, "_cgroup_quota", lambda: 64.0)  # a quota above the affinity does not add cores
    assert available_cpus() == affinity
    monkeypatch.setattr(hardware, "_cgroup_quota", lambda: 1.5)  # a fraction of a core rounds up
    assert available_cpus() == min(2, affinity)


def test_cgroup_quota_is_unlimited_or_positive() -> None:
    quota = hardware._cgroup_quota()
    assert quota is None or quota > 0


@linux_only
def test_fingerprint_has_the_cpu_flags_this_machine_reports() -> None:
    proc_flags = set(_proc_cpuinfo("flags", "Features").split())
    fingerprint = hardware_fingerprint()
    cpu = fingerprint["cpu"]
    # Only the flags that matter to inference kernels, sorted, and exactly those this CPU has.
    assert cpu["flags"] == sorted(set(CPU_FLAGS) & proc_flags)
    model = _proc_cpuinfo("model name", "Model")
    if model:
        assert cpu["model"] == model
    assert cpu["arch"] == platform.machine()
    assert cpu["logical_cpus"] == os.cpu_count()
    assert cpu["available_cpus"] == available_cpus()


def test_fingerprint_is_stable_json() -> None:
    """It goes into squeezer.json and into optimize-cache keys: plain JSON, the same on every call."""
    first = hardware_fingerprint()
    assert set(first) == {"cpu", "gpus", "os", "python_impl"}
    assert first["os"].startswith(platform.system())
    assert first["python_impl"] == sys.implementation.name
    assert all(isinstance(gpu, str) and gpu for gpu in first["gpus"])
    assert json.loads(json.dumps(first)) == first
    assert hardware_fingerprint() == first
    assert cpu_info() == first["cpu"]


def test_no_gpus_without_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware.shutil, "which", lambda name: None)
    assert gpus() == []


def test_probing_imports_no_framework() -> None:
    code = ("import sys; import squeezer.hardware; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxruntime')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1],
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
