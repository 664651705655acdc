"""Put an artifact in place atomically: build in a hidden folder next to DIR, rename at the end.

An interrupted or failed optimize (Ctrl-C, an exception, SIGTERM through the CLI's handler) removes its
staging folder and leaves DIR as it was: never a half-written artifact that a server could pick up. A
process killed outright (SIGKILL, a power cut) cannot clean up, so staging folders carry their owner's pid and
the next optimize into the same DIR removes those whose owner is gone.
`package_files` puts the source's tokenizer and config beside the graph, whatever the model family.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from squeezer.artifact import copy_model_files, is_artifact

if TYPE_CHECKING:
    from squeezer.sources import ModelSource
    from squeezer.tasks import ModelInfo


def check_destination(out: Path, source: Path) -> None:
    """Refuse to write over the source, or over a folder that is neither empty nor an artifact."""
    if out == source or source in out.parents:
        raise ValueError(f"--out {out} must not be the source folder or inside it")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not is_artifact(out):
        raise ValueError(f"--out {out} is a non-empty folder that is not a squeezer artifact; refusing to replace it")


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """Yield an empty folder beside `out`; on success it becomes `out`, on any failure it is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        yield tmp
        publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_orphans(out: Path) -> None:
    """Delete staging folders left beside `out` by optimize runs that were killed (their pid is gone)."""
    for folder in out.parent.glob(f".{out.name}.partial-*"):
        pid = folder.name.removeprefix(f".{out.name}.partial-").split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    return True


def publish(tmp: Path, out: Path) -> None:
    """Rename the finished folder into place; an older artifact at `out` is swapped out, then removed."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "a")
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old / "a", out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def package_files(src: ModelSource, info: ModelInfo, tmp: Path) -> None:
    """Tokenizer and config beside the graph: copied as they are, or saved from the GGUF file's (chat
    template included), so the artifact serves without its source."""
    if src.gguf_file:
        info.tokenizer.save_pretrained(tmp)
        info.config.save_pretrained(tmp)
    else:
        copy_model_files(src.path, tmp)
