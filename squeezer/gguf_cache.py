"""A GGUF file converted by transformers once, then kept as a transformers folder: config, tokenizer and weights.

transformers builds a GGUF's config and its tokenizer each by reading every metadata field of the file, the whole
vocabulary and merge list included, in Python: for SmolLM2-135M's GGUF (49k tokens) `load_info` took 22 s (three
reads of the file at 4 s each, and the conversions) on every server start, and again in every compile of it.
Its weights took 12 s more: a fourth read of the metadata, then every tensor dequantized to float32 in numpy.
So the converted config and tokenizer are saved once (`save_pretrained`) under `~/.cache/squeezer/gguf`, and
the dequantized weights beside them as safetensors after the first load (`weights`): a later start reads them
in a quarter of a second, with the same float32 values. The weights take float32's room on disk (540 MB for
SmolLM2's 98 MB file), so they are kept only while they take under a quarter of the free disk, and an entry of
the same file as it was before a change is removed when the new one's weights are written.

An entry is keyed by the file's path, size and modification time and by the transformers version that
converted it: a file changed in place, or a transformers that converts differently, gets a new one. Each part is
written beside the entry and renamed into place, whole or not at all (a process converting the same file at the
same time keeps whichever rename came first). A cache that cannot be written (a read-only home) costs only time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from squeezer.config import cache_dir
from squeezer.sources import ModelSource

log = logging.getLogger(__name__)
FORMAT = "2"  # bumped when what an entry holds changes
SOURCE = "source.json"  # the file an entry was converted from: its path, size and modification time
WEIGHTS = "weights"  # the entry's subfolder of dequantized float32 weights (safetensors, with their config)
SHARE_OF_FREE_DISK = 0.25  # weights are cached only while they take under this share of the free disk


def config_and_tokenizer(source: ModelSource, trust_remote_code: bool = False, cache: Path | None = None) -> tuple[Any, Any]:
    """The (config, fast tokenizer) of a GGUF source: from its cache entry, or converted now and stored there."""
    from transformers import AutoConfig, AutoTokenizer

    entry = (cache or cache_dir("gguf")) / entry_key(source)
    folder, kwargs = (entry, {}) if entry.is_dir() else (source.path, {"gguf_file": source.gguf_file})
    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=True, trust_remote_code=trust_remote_code, **kwargs)
    if folder is not entry:
        store(entry, source, config, tokenizer)
    return config, tokenizer


def weights_folder(source: ModelSource, cache: Path | None = None) -> Path | None:
    """The folder of the source's dequantized weights, if a load has cached them (see `store_weights`)."""
    folder = (cache or cache_dir("gguf")) / entry_key(source) / WEIGHTS
    return folder if folder.is_dir() else None


def store_weights(source: ModelSource, model: Any, cache: Path | None = None) -> None:
    """Save a model just loaded from the source's GGUF as its entry's weights, if the disk has room for them;
    then remove the entries of the file's earlier versions (their weights would never be read again)."""
    entry = (cache or cache_dir("gguf")) / entry_key(source)
    if not entry.is_dir() or (entry / WEIGHTS).is_dir():
        return  # no entry (the cache could not be written), or another process cached them first
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    free = shutil.disk_usage(entry).free
    if size > SHARE_OF_FREE_DISK * free:
        log.info("not caching the GGUF's %d MiB of dequantized weights: %d MiB of disk free in %s", size >> 20,
                 free >> 20, entry.parent)
        return
    if _renamed_into(entry / WEIGHTS, model.save_pretrained, "dequantized weights"):
        log.info("cached the GGUF's dequantized weights (%d MiB) in %s", size >> 20, entry / WEIGHTS)
        _remove_earlier_versions(entry)


def entry_key(source: ModelSource) -> str:
    """What the conversion depends on: the file (path, size, modification time) and the converter's version."""
    import transformers

    path, size, mtime = _identity(source)
    parts = [FORMAT, path, str(size), str(mtime), transformers.__version__]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def store(entry: Path, source: ModelSource, config: Any, tokenizer: Any) -> None:
    """Save a conversion (config, tokenizer and which file it came from) as `entry`, whole or not at all."""
    path, size, mtime = _identity(source)

    def save(folder: Path) -> None:
        config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        # A GGUF's fast tokenizer names the GGUF as its vocabulary file, so the save copies the whole file (weights
        # and all) as tokenizer.model; loading uses tokenizer.json.
        (folder / "tokenizer.model").unlink(missing_ok=True)
        (folder / SOURCE).write_text(json.dumps({"path": path, "size": size, "mtime_ns": mtime}))

    _renamed_into(entry, save, "converted config and tokenizer")


def _identity(source: ModelSource) -> tuple[str, int, int]:
    path = (source.path / str(source.gguf_file)).resolve()
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


def _renamed_into(dest: Path, save: Callable[[Path], Any], what: str) -> bool:
    """`save(folder)` into a staging folder beside `dest`, then renamed to it; whether `dest` is this one's."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            save(staging)
            os.rename(staging, dest)
            return True
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        if not dest.is_dir():
            log.warning("could not cache the GGUF's %s in %s: %s", what, dest.parent, exc)
        return False


def _remove_earlier_versions(entry: Path) -> None:
    """Remove the entries converted from this entry's file as it was before it changed (another size or
    modification time); those of the same file under another transformers version are kept."""
    this = json.loads((entry / SOURCE).read_text())
    for other in entry.parent.iterdir():
        try:
            was = json.loads((other / SOURCE).read_text())
        except (OSError, ValueError):
            continue  # not an entry, or one being written
        if other != entry and was.get("path") == this["path"] and (was.get("size"), was.get("mtime_ns")) != (this["size"], this["mtime_ns"]):
            shutil.rmtree(other, ignore_errors=True)
