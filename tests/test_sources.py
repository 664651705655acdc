"""MODEL arguments resolve to local files, and fail fast with a way forward when they cannot."""

from __future__ import annotations

from pathlib import Path

import pytest

from squeezer.config import ModelConfig, ServeConfig
from squeezer.runtime import load_runtime
from squeezer.sources import DEFAULT_MODEL_SPEC, SourceError, parse_spec, resolve


def test_default_model_comes_from_its_package() -> None:
    source = resolve(DEFAULT_MODEL_SPEC)
    assert source.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert (source.path / "model.safetensors").is_file()


def test_id_prefix_and_folder(tiny_model) -> None:
    folder = tiny_model("bert", "base")
    assert resolve(str(folder)).model_id == folder.name
    assert resolve(f"my/model={folder}").model_id == "my/model"
    assert parse_spec("just-a-source") == (None, "just-a-source")
    with pytest.raises(SourceError, match="ID=SOURCE"):
        parse_spec("=nothing")


def test_an_artifact_keeps_the_name_of_the_model_it_was_compiled_from(tiny_model, tmp_path: Path) -> None:
    """`squeezer serve ARTIFACT` answers at the URL the model had (the README's quickstart goes on working after
    `optimize`); an ID given wins, and a report that cannot be read leaves the folder's name (loading says why)."""
    from squeezer.artifact import REPORT_FILE
    from tests.compiler.artifacts import build_artifact

    folder = tiny_model("bert", "base")
    out = build_artifact(folder, tmp_path / "fast", "base", recipes="fp32").path
    assert resolve(str(out)).model_id == folder.name != out.name
    assert resolve(f"mine={out}").model_id == "mine"
    (out / REPORT_FILE).write_text("{not json")
    assert resolve(str(out)).model_id == "fast"


def test_uncached_hub_model_fails_at_once_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(SourceError, match="not in the Hugging Face cache.*huggingface-cli download"):
        resolve("some-org/some-model")


def test_missing_paths_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        resolve(str(tmp_path / "model.gguf"))
    with pytest.raises(SourceError, match="no config.json"):
        resolve(str(tmp_path))


def test_pickle_weights_are_refused_unless_allowed(tiny_model, tmp_path: Path) -> None:
    import shutil

    import torch

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model("bert", "base"), folder)
    weights = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(folder / "model.safetensors"))
    torch.save(weights, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(SourceError, match="--allow-pickle"):
        load_runtime(resolve(str(folder)), ServeConfig())
    loaded = load_runtime(resolve(str(folder)), ServeConfig(model=ModelConfig(allow_pickle=True)))
    assert loaded.task == "feature-extraction"


def test_hub_id_resolves_from_the_local_cache_offline(tiny_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hub id found in huggingface_hub's cache layout loads with no network (HF_HUB_OFFLINE=1)."""
    import shutil

    repo = tmp_path / "models--some-org--tiny-bert"
    snapshot = repo / "snapshots" / ("a" * 40)
    shutil.copytree(tiny_model("bert", "base"), snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    source = resolve("some-org/tiny-bert")
    assert source.model_id == "some-org/tiny-bert" and source.path == snapshot
    assert load_runtime(source, ServeConfig()).task == "feature-extraction"
