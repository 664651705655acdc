"""Cancelling the current task for a reason (a deadline, a client gone) and answering that reason.

Awaiting work in the request's own task, with a timer or a watcher that cancels it, costs no extra task per
request (`asyncio.wait_for` before Python 3.12 and racing two tasks each add one): at hundreds of requests a
second on a small machine, the event loop's bookkeeping is a real share of a core.
"""

from __future__ import annotations

import asyncio


class Interrupt:
    """Cancels the task that created it when `fire` is called, and remembers that it did."""

    def __init__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("an Interrupt belongs to a running task")
        self._task = task
        self.fired = False

    def fire(self) -> None:
        self.fired = True
        self._task.cancel()

    def claim(self) -> bool:
        """In an `except CancelledError`: True if the cancellation was this interrupt's, now answered by
        the caller (which raises its own error instead); False if it came from elsewhere and must propagate."""
        if not self.fired:
            return False
        uncancel = getattr(self._task, "uncancel", None)  # Python 3.11+ counts cancellations
        if uncancel is not None:
            uncancel()
        return True
