"""`heap.trim`: memory a process freed leaves its resident size (what --max-memory-mb and the kernel judge)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from squeezer import heap

PROBE = """
import re
from squeezer import heap

def rss_mb():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024

base = rss_mb()
chunks = [bytearray(64 * 1024) for _ in range(4000)]  # 250 MB in blocks glibc serves from its heap, not mmap
held = rss_mb()
survivors = chunks[::50]  # 5 MB that stay, scattered as long-lived objects are: the heap cannot shrink from its top
del chunks
freed = rss_mb()
heap.trim()
print(base, held, freed, rss_mb())
"""


@pytest.mark.skipif(heap._malloc_trim() is None, reason="this C library has no malloc_trim (not glibc)")
def test_trim_gives_freed_heap_memory_back_to_the_system() -> None:
    """Freed blocks between live ones stay resident until trimmed (glibc keeps them for the next allocations);
    trim hands their pages back."""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120)
    base, held, freed, trimmed = map(int, out.stdout.split())
    assert held - base > 200, out.stdout
    assert freed - base > 200, f"freeing alone already gave the memory back; the test proves nothing: {out.stdout}"
    assert trimmed - base < 50, out.stdout
