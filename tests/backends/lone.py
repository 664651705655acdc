"""A check both CPU backends share: a batch marked alone that finds none running runs on every core (the
backend's wide runner); a batch not marked, or one that starts beside another, keeps to its own instance."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np

from squeezer.backends import Batch


class Held:
    """Wraps a runner so its calls of `method` are counted and can be held at their start (the real call runs)."""

    def __init__(self, inner: Any, method: str) -> None:
        self._inner, self._method, self.runs = inner, method, 0
        self.started, self.go = threading.Event(), threading.Event()
        self.go.set()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        def held(*args: Any, **kwargs: Any) -> Any:
            self.runs += 1
            self.started.set()
            self.go.wait(10)
            return attr(*args, **kwargs)

        return held


def check_lone_batches_run_wide(backend: Any, wide_attr: str, method: str,
                                compare: Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], None]) -> None:
    """`backend.<wide_attr>` (whose `method` runs a batch) takes a batch marked alone with none running, and only
    such a batch; `compare(got, want)` checks a batch run beside it against the same batch run alone."""
    wide = Held(getattr(backend, wide_attr), method)
    setattr(backend, wide_attr, wide)
    batches = [Batch.pad([[101, 7, 8, 9, 102][: 3 + i % 3]] * (1 + i % 4), None, 0, alone=True) for i in range(3)]
    alone = backend.forward(batches[2])
    assert wide.runs == 1  # marked alone, and none running: on every core
    backend.forward(replace(batches[2], alone=False))
    assert wide.runs == 1  # not marked: on an instance, though none runs
    wide.go.clear()
    with ThreadPoolExecutor(2) as pool:
        lone = pool.submit(backend.forward, batches[1])  # none running: the wide runner, held there
        assert wide.started.wait(10)
        beside = pool.submit(backend.forward, batches[2]).result(10)  # marked too, but one runs: its own instance
        assert wide.runs == 2
        wide.go.set()
        lone.result(10)
    compare(beside, alone)
