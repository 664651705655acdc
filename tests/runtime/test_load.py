"""Loads take turns (transformers' lazy imports are not thread-safe), but `--optimize`'s compile, the prepare step,
runs outside that turn: another model loads while one compiles, instead of waiting minutes behind it."""

from __future__ import annotations

import threading

from squeezer.config import ServeConfig
from squeezer.runtime import load_runtime
from squeezer.sources import ModelSource


def test_a_model_loads_while_another_models_compile_is_running(tiny_model) -> None:
    compiling, finish = threading.Event(), threading.Event()

    def compile_step(source: ModelSource) -> ModelSource:  # stands in for the compiler's child process
        compiling.set()
        assert finish.wait(120), "the test never let the compile finish"
        return source

    config = ServeConfig()
    results: dict[str, object] = {}
    first = threading.Thread(target=lambda: results.update(a=load_runtime(
        ModelSource("a", tiny_model("bert", "base")), config, prepare=compile_step)))
    first.start()
    assert compiling.wait(60)
    second = threading.Thread(target=lambda: results.update(b=load_runtime(
        ModelSource("b", tiny_model("bert", "sequence-classification")), config)))
    second.start()
    second.join(60)
    loaded_meanwhile = not second.is_alive()
    finish.set()
    first.join(120)
    second.join(120)
    try:
        assert loaded_meanwhile, "model b waited for model a's compile"
        assert results["a"].task == "feature-extraction" and results["b"].task == "text-classification"  # type: ignore[attr-defined]
    finally:
        for runtime in results.values():
            runtime.close()  # type: ignore[attr-defined]

