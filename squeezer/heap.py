"""Keeping the loaded models out of Python's garbage collector, as vLLM does after its start-up.

A served model leaves some 450,000 long-lived Python objects (the imported libraries, the tokenizer, the
runtime). The collector's oldest generation scans all of them: measured in the server under 32 clients (MiniLM on
OpenVINO), one full collection every 15 to 20 s, each holding the GIL for 220 to 240 ms, during which no request
is parsed, batched or answered. `gc.freeze()` moves what is alive into a permanent generation the collector
skips, so a full collection only scans the objects made since.

Frozen objects are never collected, so the heap is settled again whenever the set of loaded models changes:
what an unloaded or replaced model leaves in reference cycles is unfrozen and collected first, then what
remains is frozen again.
"""

from __future__ import annotations

import ctypes
import functools
import gc
from typing import Any


def freeze() -> None:
    """Freeze what is alive now: after a model has loaded, nothing it holds will be scanned again."""
    gc.freeze()


def settle() -> None:
    """Collect what a model that is gone left in cycles, then freeze the rest (after an unload or a swap): one
    full collection, about as long as one the collector would have made by itself; its freed memory goes back
    to the system (`trim`)."""
    gc.unfreeze()
    trim()
    gc.freeze()


def trim() -> None:
    """Collect, then hand the heap's free pages back to the system. glibc keeps freed memory for the process's
    next allocations, so a large transient (a graph fused in Python, a quantizer's copies, an unloaded model)
    stays in the resident size it is judged by: measured on MiniLM's default compile, the peak went from 2.40 to
    1.77 GB when each candidate's gate ended with this (BENCHMARKS.md). A no-op on a C library without `malloc_trim` (musl, macOS)."""
    gc.collect()
    trimmer = _malloc_trim()
    if trimmer is not None:
        trimmer(0)


@functools.cache
def _malloc_trim() -> Any:
    try:
        return getattr(ctypes.CDLL("libc.so.6"), "malloc_trim", None)
    except OSError:
        return None


def release() -> None:
    """Give everything back to the collector (the registry closes: its models are gone for good), which frees
    it in its own time: a process that goes on (an application embedding the engine, a test run) pays no
    collection here."""
    gc.unfreeze()
