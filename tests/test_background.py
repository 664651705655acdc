"""Serving at once and optimizing in the background (issue 14, item 5): the model answers on PyTorch from the
start; the compiled artifact is swapped in while requests keep coming, none failed or lost; a failed
optimization keeps PyTorch serving, with the reason on /info."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from squeezer.config import ModelConfig, ServeConfig
from squeezer.engine import Engine
from squeezer.sources import ModelSource
from tests.helpers import until

pytestmark = pytest.mark.asyncio
TEXTS = ["The quick brown fox jumps over the lazy dog.", "A short one.", "Ships sail at dawn " * 12]


def cosine(a: list, b: list) -> float:
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


async def keep_asking(engine: Engine, stop: asyncio.Event) -> list:
    """Requests back to back (three clients) until `stop`: every one must be answered."""

    async def client(i: int) -> list:
        answers = []
        while not stop.is_set():
            text = TEXTS[len(answers) % len(TEXTS)]
            result = await engine.run("m", text, {"normalize": True}, use_cache=False)
            answers.append((text, result.output, engine.models()[0]["backend"]))
        return answers

    done = await asyncio.gather(*(client(i) for i in range(3)))
    return [a for answers in done for a in answers]


async def test_the_artifact_is_swapped_in_under_load(tiny_model, tmp_path: Path, monkeypatch) -> None:
    from squeezer.compiler.serving import optimizer

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tiny_model("bert", "base")
    config = ServeConfig(model=ModelConfig(optimize_in_background=True))
    engine = Engine([ModelSource("m", folder)], config, optimizer(config.model))
    await engine.start()
    try:
        first = engine.models()[0]
        assert first["backend"] == "torch" and first["optimization"]["state"] == "compiling"
        reference = {t: (await engine.run("m", t, {"normalize": True}, use_cache=False)).output for t in TEXTS}
        assert not (await engine.run("m", "cached before the swap")).cached
        assert (await engine.run("m", "cached before the swap")).cached
        stop = asyncio.Event()
        load = asyncio.ensure_future(keep_asking(engine, stop))
        for _ in range(1200):
            if engine.models()[0]["optimization"]["state"] != "compiling":
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # requests keep coming after the swap too
        stop.set()
        answers = await load
        info = engine.models()[0]
        assert info["optimization"]["state"] == "serving", info
        assert info["optimization"]["chosen"] and info["optimization"]["speedup"] > 0  # why: the gate's verdict
        assert info["backend"] == info["optimization"]["backend"] and info["state"] == "ready"
        assert {backend for _, _, backend in answers} == {"torch", info["backend"]}  # answered on both sides
        for text, output, _ in answers:  # every answer, before, during and after the swap, is the model's
            assert cosine(output, reference[text]) > 0.99
        # The result cache does not answer with the old backend's vector: the new one computes it, then caches it.
        after = await engine.run("m", "cached before the swap")
        assert not after.cached
        assert (await engine.run("m", "cached before the swap")).cached
    finally:
        await engine.close()


async def test_a_failed_optimization_keeps_pytorch_serving(tiny_model) -> None:
    def broken(source: ModelSource) -> ModelSource:
        raise RuntimeError("no candidate passed the accuracy gate")

    config = ServeConfig(model=ModelConfig(optimize_in_background=True))
    engine = Engine([ModelSource("m", tiny_model("bert", "base"))], config, broken)
    await engine.start()
    try:
        for _ in range(100):
            if engine.models()[0]["optimization"]["state"] != "compiling":
                break
            await asyncio.sleep(0.05)
        info = engine.models()[0]
        assert info["optimization"] == {"state": "failed", "reason": "RuntimeError: no candidate passed the accuracy gate"}
        assert info["backend"] == "torch" and info["state"] == "ready"
        assert (await engine.run("m", "still served")).output
    finally:
        await engine.close()


async def test_the_compile_counts_in_the_memory_budget(tiny_model, tmp_path: Path) -> None:
    """Under --max-memory-mb the compile's own memory is held in the budget before it starts: the least recently
    used other model is unloaded for it, it is given back when the compile ends, and a budget that cannot hold the
    compile at all keeps the model serving as it is, with the reason, without unloading anyone for nothing."""
    import threading

    from squeezer.background import compile_memory
    from tests.compiler.artifacts import build_artifact

    started, finish = threading.Event(), threading.Event()

    def slow_compile(source: ModelSource) -> ModelSource:
        started.set()
        finish.wait(30)
        return source  # not an artifact: "nothing faster", so the model keeps what it serves

    other = build_artifact(tiny_model("distilbert", "base"), tmp_path / "other", "base", recipes="fp32")  # never compiled
    sources = [ModelSource("m", tiny_model("bert", "base")), ModelSource("other", other.path, artifact=True)]
    probe = Engine(sources, ServeConfig())
    await probe.start()
    sizes = {m["id"]: m["memory_bytes"] for m in probe.models()}
    await probe.close()
    compile_mb = compile_memory(sizes["m"]) >> 20
    both_mb = (sizes["m"] + sizes["other"]) >> 20

    # Room for the compile beside one of the two models only: while it runs, one is unloaded (whichever the
    # least-recently-used rule picks as the loads and the compile's hold race), and both fit again after it.
    config = ServeConfig(model=ModelConfig(optimize_in_background=True, max_memory_mb=compile_mb + both_mb // 2 + 2))
    engine = Engine(sources, config, slow_compile)
    await engine.start()
    try:
        await asyncio.to_thread(started.wait, 30)
        await until(lambda: not {m["state"] for m in engine.models()} & {"loading", "unloading"}, 15, 0.05)
        assert sorted(m["state"] for m in engine.models()) == ["ready", "unloaded"], engine.models()
        await engine.load("m")  # whichever was unloaded: "m" answers while it compiles
        assert (await engine.run("m", "served while it compiles")).output
        finish.set()
        await until_optimized(engine)
        await engine.load("other")  # the compile's memory is back: both fit again
        await engine.load("m")
        states = {m["id"]: m["state"] for m in engine.models()}
        assert states == {"m": "ready", "other": "ready"}
    finally:
        finish.set()
        await engine.close()

    started.clear()
    tight = ServeConfig(model=ModelConfig(optimize_in_background=True, max_memory_mb=max(1, compile_mb // 2)))
    engine = Engine(sources[:1], tight, slow_compile)
    await engine.start()
    try:
        info = await until_optimized(engine)
        assert info["optimization"]["state"] == "kept" and "--max-memory-mb cannot hold the compile" in info["optimization"]["reason"]
        assert not started.is_set() and info["state"] == "ready"
        assert (await engine.run("m", "still served")).output
    finally:
        await engine.close()


async def until_optimized(engine: Engine) -> dict:
    """The first model's /info record once its background optimization has settled."""
    await until(lambda: engine.models()[0].get("optimization", {}).get("state") not in (None, "compiling"), 15, 0.05)
    return engine.models()[0]
