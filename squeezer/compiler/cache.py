"""The optimization cache: a finished artifact kept under a key made of everything its result depends on
(model content hash, hardware fingerprint, library versions, squeezer's own code, the optimize settings and
validation data), so optimizing the same model again on the same machine is a copy."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from squeezer.artifact import ArtifactError, canonical, load_artifact
from squeezer.config import cache_dir


def default_dir() -> Path:
    return cache_dir("optimize")


def code_hash(root: Path = Path(__file__).parent.parent) -> str:
    """A digest of squeezer's own Python sources: a changed recipe, graph builder, gate or session setting
    must not be answered with an artifact an older version built (the package version alone does not move
    between development commits)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(parts)).hexdigest()[:40]


def lookup(cache_dir: Path, key: str) -> Path | None:
    """The cached artifact for `key`, if one is there and intact; a damaged entry is dropped."""
    entry = cache_dir / key
    if not entry.is_dir():
        return None
    try:
        load_artifact(entry)
    except ArtifactError:
        shutil.rmtree(entry, ignore_errors=True)
        return None
    return entry


def store(cache_dir: Path, key: str, artifact: Path) -> None:
    """Copy a finished artifact into the cache, atomically (copy beside, then rename)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_dir))
    try:
        shutil.copytree(artifact, staging / "a")
        entry = cache_dir / key
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)
        os.replace(staging / "a", entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
