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
        assert info["backend"] in ("onnxruntime", "openvino") and info["state"] == "ready"
        assert {backend for _, _, backend in answers} == {"torch", info["backend"]}  # answered on both sides
        for text, output, _ in answers:  # every answer, before, during and after the swap, is the model's
            assert cosine(output, reference[text]) > 0.99
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
