"""`serve --optimize`'s prepare step (squeezer.compiler.serving): one compile at a time."""

from __future__ import annotations

import threading
import time

from squeezer.compiler import serving
from squeezer.config import ModelConfig
from squeezer.sources import ModelSource


def test_the_compiles_of_optimize_take_turns(monkeypatch, tmp_path) -> None:
    """Each compile uses every core and about 12 times the weights: two models' compiles never run at once."""
    running, most = [0], [0]

    def child(fn: object, source: ModelSource, out: object, config: object) -> tuple[object, None]:
        running[0] += 1
        most[0] = max(most[0], running[0])
        time.sleep(0.3)
        running[0] -= 1
        return out, None

    monkeypatch.setattr(serving, "run_isolated", child)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    threads = [threading.Thread(target=serving.optimized_source, args=(ModelSource(m, tmp_path / m), ModelConfig()))
               for m in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert most == [1]
