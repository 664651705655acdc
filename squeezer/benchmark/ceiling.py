"""The ceiling: what the best runtime on this machine reaches in-process for a workload's texts, on
length-sorted batches of 32, pre-tokenized, no HTTP or JSON, so a reader sees how close each rung comes to it.

Measured for the model as loaded (PyTorch) and for the artifact `optimize` chooses here, each with one batch at
a time on every core and with one batch per core at once (the backend's instances), the fastest counting. The
artifact is the one the compiled rungs use (squeezer.benchmark.artifacts), so the benchmark never imports the
compiler.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

BATCH = 32


def ceiling(spec: str, texts: list[str], instances: int, batch: int = BATCH) -> float:
    """Texts per second of the bare backend on length-sorted batches, `instances` batches at once (one thread
    each), as serving runs them."""
    from squeezer.backends import Batch
    from squeezer.config import BackendConfig, ServeConfig
    from squeezer.runtime import load_runtime
    from squeezer.sources import resolve

    model = load_runtime(resolve(spec), ServeConfig(backend=BackendConfig(instances=instances))).model  # type: ignore[attr-defined]
    try:
        encoded = sorted((model.info.encode(t, truncate=True)[0]["input_ids"] for t in texts), key=len)
        pad = model.info.tokenizer.pad_token_id or 0
        batches = [Batch.pad(encoded[i : i + batch], None, pad) for i in range(0, len(encoded), batch)]
        workers = model.backend.capabilities().instances
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(model.backend.forward, batches[:workers]))  # warm-up
            start = time.perf_counter()
            list(pool.map(model.backend.forward, batches))
            seconds = time.perf_counter() - start
    finally:
        model.close()
    return len(encoded) / seconds


def best_ceiling(runtimes: dict[str, str], texts: list[str]) -> dict[str, Any]:
    """Every runtime (label -> model spec) at one batch at a time and at one per core; the fastest, and all."""
    from squeezer.hardware import available_cpus

    found = {f"{label}, {n} at once": ceiling(spec, texts, n) for label, spec in runtimes.items()
             for n in sorted({1, available_cpus()})}
    best = max(found, key=found.__getitem__)
    return {"items_per_s": found[best], "runtime": best, "all": found}
