"""What every family of models shares in `squeezer optimize`: the pipeline type and the progress callback.

`optimize` picks a `Pipeline` by task from its table (encoders by default, `optimize_decoder.DECODER` for
causal LMs); hashing, the cache, atomic output and the sealed report are shared. Kept apart from both
plug-ins so neither owns the other's types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from squeezer.compiler import validation_data as vd
from squeezer.compiler.config import OptimizeConfig
from squeezer.sources import ModelSource
from squeezer.tasks import ModelInfo

Progress = Callable[[str], None]  # one line of progress for the user (the CLI prints it on stderr)


@dataclass(frozen=True)
class Pipeline:
    """How one family of models is optimized: its validation set, its target, and the compile step."""

    examples: Callable[[ModelSource, ModelInfo, str, OptimizeConfig], list[vd.Example]]
    target: Callable[[str], str]
    compile: Callable[..., dict[str, Any]]
