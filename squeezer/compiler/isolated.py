"""Run a compile in a process of its own, for the server (`serve --optimize` and the background compile).

A compile is the heaviest thing squeezer does: it holds the PyTorch reference, the export, the graphs being
rewritten and every candidate that passed the gate at once (measured for MiniLM's default sweep: a peak of
2.3 GB resident, against 0.4 GB for the libraries alone). Run inside the server, two things go wrong: the
allocator keeps most of that peak after the compile ends (the server stays 2 GB larger for its whole life),
and a compile that runs out of memory has the kernel kill the server with it, every client's requests
included. In a spawned child, the memory goes back to the system when the child exits, and a child that dies
is a failed compile that the server reports while it keeps serving.

The child is spawned (not forked: the server has threads, and a fork copies their locks mid-use) and daemonic,
so a server that shuts down stops it (SIGTERM: its staging folder is removed on the way out) rather than wait
for it. Its log lines go where the server's go, at the server's level.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

T = TypeVar("T")


class CompileDied(RuntimeError):
    """The compile's process ended without an answer: killed (out of memory, most often) or crashed."""


def run_isolated(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a spawned child process: its result, or the exception it raised, raised here."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    level = logging.getLogger().getEffectiveLevel()
    child = context.Process(target=_child, args=(send, level, fn, args), name="squeezer-optimize", daemon=True)
    child.start()
    send.close()  # only the child writes: its end closing is how its death shows here
    try:
        ok, value = receive.recv()
    except EOFError:
        child.join(10)
        raise CompileDied(f"the compile's process died ({_death(child.exitcode)}); the model keeps serving as it "
                          "was") from None
    finally:
        receive.close()
    child.join(30)
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def _death(code: int | None) -> str:
    """How a child ended, in words: a signal's name (SIGKILL: most often the kernel out of memory) or its code."""
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        return f"killed by {name}" + (", most often the kernel running out of memory" if name == "SIGKILL" else "")
    return f"exit code {code}"


def _child(send: Connection, level: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """The child's body: log like the parent, turn SIGTERM into an exception (so staging folders are removed),
    run `fn` and send back (True, result) or (False, exception)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _raise_exit)
    try:
        outcome: tuple[bool, Any] = (True, fn(*args))
    except Exception as exc:  # handed to the parent, which raises it where the compile was asked for
        outcome = (False, exc)
    try:
        send.send(outcome)
    except Exception as exc:  # an exception that cannot be pickled still says what happened
        send.send((False, RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]} ({exc})")))
    finally:
        send.close()


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)
