"""A GGUF file's config and tokenizer, converted by transformers once and then kept as a folder.

transformers builds a GGUF's config and its tokenizer each by reading every metadata field of the file, the whole
vocabulary and merge list included, in Python: for SmolLM2-135M's GGUF (49k tokens) `load_info` took 22 s (three
reads of the file at 4 s each, and the conversions) on every server start, and again in every compile of it;
loading the weights read it once more for the config (`TorchDecoder.load` now passes this one). So
the converted config and tokenizer are saved once (`save_pretrained`) under `~/.cache/squeezer/gguf` and loaded
from there in well under a second. The entry is keyed by the file's path, size and modification time and by the
transformers version that converted it: a file changed in place, or a transformers that converts differently,
gets a new one. A cache that cannot be written (a read-only home) costs only the time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from squeezer.config import cache_dir
from squeezer.sources import ModelSource

log = logging.getLogger(__name__)
FORMAT = "1"  # bumped when what an entry holds changes


def config_and_tokenizer(source: ModelSource, trust_remote_code: bool = False, cache: Path | None = None) -> tuple[Any, Any]:
    """The (config, fast tokenizer) of a GGUF source: from its cache entry, or converted now and stored there."""
    from transformers import AutoConfig, AutoTokenizer

    entry = (cache or cache_dir("gguf")) / entry_key(source)
    folder, kwargs = (entry, {}) if entry.is_dir() else (source.path, {"gguf_file": source.gguf_file})
    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=True, trust_remote_code=trust_remote_code, **kwargs)
    if folder is not entry:
        store(entry, config, tokenizer)
    return config, tokenizer


def entry_key(source: ModelSource) -> str:
    """What the conversion depends on: the file (path, size, modification time) and the converter's version."""
    import transformers

    path = (source.path / str(source.gguf_file)).resolve()
    stat = path.stat()
    parts = [FORMAT, str(path), str(stat.st_size), str(stat.st_mtime_ns), transformers.__version__]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def store(entry: Path, config: Any, tokenizer: Any) -> None:
    """Save a conversion as `entry`, whole or not at all: written beside it, then renamed into place (a process
    converting the same file at the same time keeps whichever rename came first)."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
        try:
            config.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            os.rename(staging, entry)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        if not entry.is_dir():
            log.warning("could not cache the GGUF's converted config and tokenizer in %s: %s", entry.parent, exc)
