"""Fixtures for the compiler tests: a tiny exported BERT, and tiny artifacts built once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from squeezer.compiler.report import Report
from tests.compiler.artifacts import build_artifact


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU and onnxruntime-gpu (skipped without them)")


@pytest.fixture(scope="session")
def exported_bert(tiny_model: Callable[[str, str], Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(Exported, ModelInfo) of the tiny BERT base model."""
    from squeezer.compiler.export import export
    from squeezer.config import ModelConfig
    from squeezer.loading import load_info
    from squeezer.sources import ModelSource

    folder = tiny_model("bert", "base")
    info, _ = load_info(ModelSource("tiny", folder), ModelConfig())
    return export(folder, "base", info, tmp_path_factory.mktemp("export") / "bert.onnx"), info


@pytest.fixture(scope="session")
def tiny_artifact(tiny_model: Callable[[str, str], Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Report]:
    """tiny_artifact(arch, head) -> Report of an artifact built once per session (quick recipes)."""
    built: dict[tuple[str, str], Report] = {}

    def get(arch: str, head: str) -> Report:
        if (arch, head) not in built:
            out = tmp_path_factory.mktemp(f"artifact-{arch}-{head}") / "artifact"
            built[(arch, head)] = build_artifact(tiny_model(arch, head), out, head)
        return built[(arch, head)]

    return get
