"""The server's compiles run in a child process (squeezer.compiler.isolated): the answer or the exception comes
back, and a child that dies (the kernel's out-of-memory kill is a SIGKILL) is a failed compile, not a dead server."""

from __future__ import annotations

import os
import signal

import pytest

from squeezer.compiler.isolated import CompileDied, run_isolated


def whose_pid(offset: int) -> int:
    return os.getpid() + offset


def refuse(reason: str) -> None:
    raise ValueError(reason)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_the_work_runs_in_another_process_and_its_answer_comes_back() -> None:
    assert run_isolated(whose_pid, 0) != os.getpid()


def test_an_exception_in_the_child_is_raised_here_with_its_type_and_message() -> None:
    with pytest.raises(ValueError, match="no candidate passed the accuracy gate"):
        run_isolated(refuse, "no candidate passed the accuracy gate")


def test_a_child_killed_outright_is_a_failed_compile_that_says_how_it_died() -> None:
    with pytest.raises(CompileDied, match="killed by SIGKILL, most often the kernel running out of memory"):
        run_isolated(die)
    assert run_isolated(whose_pid, 1) != os.getpid() + 1  # and the next compile runs as before
