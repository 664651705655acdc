"""The model lifecycle under concurrency and faults: a start that fails, unloads that overlap (issue 13); the
heap frozen out of the garbage collector while a model is loaded, and given back when it is not.

The registry is driven with a stand-in runtime (`load_runtime` replaced), so each fault is exact and quick.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path
from typing import Any

import pytest

from squeezer import registry as registry_module
from squeezer.config import ServeConfig
from squeezer.errors import ModelNotReadyError
from squeezer.registry import ModelRegistry
from squeezer.runtime import RuntimeStats
from squeezer.sources import ModelSource


class Cycle:
    """An object in a reference cycle: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


class StandIn:
    """A runtime that counts what the registry does to it."""

    kind = "stand-in"
    task = "feature-extraction"
    capabilities = frozenset({"infer"})
    memory_bytes = 1

    def __init__(self, fail_start: bool) -> None:
        self.fail_start, self.started, self.drains, self.closes = fail_start, 0, 0, 0
        self.draining = asyncio.Event()
        self.cycle = Cycle()  # what a real runtime holds in reference cycles: only the collector frees it


    def describe(self) -> dict[str, Any]:
        return {"task": self.task}

    def stats(self) -> RuntimeStats:
        return RuntimeStats(queue_depth=0)

    def start(self) -> None:
        self.started += 1
        if self.fail_start:
            raise RuntimeError("the queue could not be built")

    async def drain(self) -> None:
        self.drains += 1
        self.draining.set()
        await asyncio.sleep(0.05)  # work still finishing

    def close(self) -> None:
        self.closes += 1


def registry_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fail_start: bool = False) -> tuple[ModelRegistry, list[StandIn]]:
    made: list[StandIn] = []

    def load(*_: Any) -> StandIn:
        made.append(StandIn(fail_start))
        return made[-1]

    monkeypatch.setattr(registry_module, "load_runtime", load)
    return ModelRegistry([ModelSource("m", tmp_path)], ServeConfig()), made


async def test_a_runtime_that_fails_to_start_is_reported_failed_not_loading(monkeypatch, tmp_path) -> None:
    registry, made = registry_with(monkeypatch, tmp_path, fail_start=True)
    entry = registry.load("m")
    await asyncio.wait_for(entry.settled.wait(), 5)
    assert entry.state == "failed" and "queue could not be built" in (entry.error or "") and entry.ever_settled
    assert made[0].closes == 1  # what it had loaded is freed
    with pytest.raises(ModelNotReadyError, match="failed to load"):
        await registry.ready("m", wait=False)


async def test_unloading_a_failed_model_keeps_its_failure(monkeypatch, tmp_path) -> None:
    """Nothing was loaded, so there is nothing to unload: the model stays `failed` with its reason (it read
    `unloaded`, and the next request then retried the broken load instead of answering why)."""
    registry, made = registry_with(monkeypatch, tmp_path, fail_start=True)
    await asyncio.wait_for(registry.load("m").settled.wait(), 5)
    entry = await registry.unload("m")
    assert entry.state == "failed" and "queue could not be built" in (entry.error or "")
    with pytest.raises(ModelNotReadyError, match="failed to load"):
        await registry.ready("m", wait=False)
    assert len(made) == 1 and made[0].closes == 1


async def test_a_model_over_the_memory_budget_alone_fails_to_load(monkeypatch, tmp_path) -> None:
    """A model that holds more than --max-memory-mb with nothing else loaded is refused and freed, not kept
    loaded past the budget; one that fits beside nothing still loads."""
    from squeezer.config import ModelConfig

    registry, made = registry_with(monkeypatch, tmp_path)
    registry._config = ServeConfig(model=ModelConfig(max_memory_mb=2))
    monkeypatch.setattr(StandIn, "memory_bytes", 3 << 20)
    entry = registry.load("m")
    await asyncio.wait_for(entry.settled.wait(), 5)
    assert entry.state == "failed" and entry.runtime is None
    assert "OverBudgetError: the model holds 3.0 MiB loaded, more than --max-memory-mb 2" in (entry.error or "")
    assert (made[0].started, made[0].closes) == (0, 1)
    monkeypatch.setattr(StandIn, "memory_bytes", 2 << 20)  # exactly the budget
    await asyncio.wait_for(registry.load("m").settled.wait(), 5)
    assert entry.state == "ready" and entry.runtime is made[1]


async def test_overlapping_unloads_drain_and_close_once(monkeypatch, tmp_path) -> None:
    registry, made = registry_with(monkeypatch, tmp_path)
    await asyncio.wait_for(registry.load("m").settled.wait(), 5)
    first = asyncio.ensure_future(registry.unload("m"))
    await made[0].draining.wait()
    with pytest.raises(ModelNotReadyError, match="being unloaded"):  # neither served nor reloaded meanwhile
        await registry.ready("m", wait=False)
    await asyncio.gather(first, registry.unload("m"), registry.unload("m"))
    assert (made[0].drains, made[0].closes, len(made)) == (1, 1, 1)
    assert registry.get("m").state == "unloaded"


async def test_a_request_that_waits_for_the_model_outlasts_its_unload_and_gets_the_reload(monkeypatch, tmp_path) -> None:
    """`wait_for_model` (the Inference API's option) waits through an eviction too, not only through a load: the
    request gets the reloaded runtime instead of a 503."""
    registry, made = registry_with(monkeypatch, tmp_path)
    await asyncio.wait_for(registry.load("m").settled.wait(), 5)
    unloading = asyncio.ensure_future(registry.unload("m"))
    await made[0].draining.wait()
    runtime = await asyncio.wait_for(registry.ready("m", wait=True), 5)
    await unloading
    assert runtime is made[1] and (made[0].closes, made[1].closes) == (1, 0) and registry.get("m").state == "ready"


async def test_the_memory_budget_evicts_the_least_recently_used_of_three(tiny_model) -> None:
    """Three ~4 MiB models under a 10 MiB budget: two stay loaded, and a load evicts whichever was used least
    recently, not the first or the last given."""
    from squeezer.config import ModelConfig
    from squeezer.engine import Engine

    folder = tiny_model("bert", "base")
    engine = Engine([ModelSource(name, folder) for name in "xyz"], ServeConfig(model=ModelConfig(max_memory_mb=10)))
    await engine.start()

    async def states() -> dict[str, str]:
        """The states once evictions started by the last load have finished (they drain in the background)."""
        for _ in range(500):
            now = {m["id"]: m["state"] for m in engine.models()}
            if not {"loading", "unloading"} & set(now.values()):
                return now
            await asyncio.sleep(0.02)
        raise AssertionError(f"models never settled: {now}")

    try:
        assert sorted((await states()).values()) == ["ready", "ready", "unloaded"]
        first, second = [m for m, s in (await states()).items() if s == "ready"]
        cold = next(m for m, s in (await states()).items() if s == "unloaded")
        await engine.run(second, "hi")
        await engine.run(first, "hi")  # `second` is now the least recently used
        await engine.load(cold)
        assert await states() == {first: "ready", cold: "ready", second: "unloaded"}
        await engine.run(first, "hi")  # now `cold` is the least recently used
        await engine.load(second)
        assert await states() == {first: "ready", second: "ready", cold: "unloaded"}
    finally:
        await engine.close()


async def test_a_model_repaired_after_a_failed_start_serves_its_task_once_reloaded(tiny_model, tmp_path) -> None:
    """A folder whose config.json is broken at start has no task and fails to load; once the file is repaired,
    /load brings it up and its task routes the Inference API's requests (it answered 400 "does not generate
    text" with the task it never had)."""
    import shutil

    import httpx

    from squeezer.api import create_app
    from squeezer.engine import Engine

    folder = tmp_path / "m"
    shutil.copytree(tiny_model("bert", "base"), folder)
    config = (folder / "config.json").read_text()
    (folder / "config.json").write_text(config[: len(config) // 2])
    engine = Engine([ModelSource("m", folder)])
    app = create_app(engine)
    await engine.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            failed = await client.post("/models/m", json={"inputs": "hi"})
            assert failed.status_code == 503 and engine.registry.get("m").state == "failed"  # type: ignore[union-attr]
            (folder / "config.json").write_text(config)
            assert (await client.post("/models/m/load")).status_code == 200
            answered = await client.post("/models/m", json={"inputs": "hi"})
            assert answered.status_code == 200, answered.text
            assert (await client.post("/models/m/pipeline/feature-extraction", json={"inputs": "hi"})).status_code == 200
    finally:
        await engine.close()


async def test_a_loaded_model_stays_out_of_the_collector_and_is_collected_once_unloaded(monkeypatch, tmp_path) -> None:
    """A load freezes the heap (a full collection would otherwise scan every object the model holds, stalling
    every request for its length); an unload unfreezes and collects, so what the model held in cycles is freed,
    and freezes again what remains."""
    gc.unfreeze()
    registry, made = registry_with(monkeypatch, tmp_path)
    registry.load("m")
    await registry.ready("m", wait=True)
    assert gc.get_freeze_count() > 0
    held = weakref.ref(made[0].cycle)
    gc.collect()
    assert held() is not None  # frozen with the model (and still in use)
    made.clear()
    await registry.unload("m")
    assert held() is None  # its cycle was collected, not left frozen for ever
    assert gc.get_freeze_count() > 0  # the rest is frozen again
    await registry.close()
    assert gc.get_freeze_count() == 0  # closed: everything is the collector's again
