"""The test run itself: a hanging test fails on its own, with the stacks, and the run goes on (CI has a limit)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HANGING = '''
import asyncio
import threading

import pytest


@pytest.mark.timeout(2)
async def test_awaits_for_ever():
    await asyncio.Event().wait()


@pytest.mark.timeout(2)
def test_waits_for_a_thread_that_never_ends():
    threading.Event().wait()


def test_after_them():
    assert True
'''


def test_a_hanging_test_fails_with_its_stack_and_the_run_goes_on(tmp_path: Path) -> None:
    """Run with this repository's pytest settings: both hanging tests (an async one under asyncio_mode auto,
    a blocked sync one) fail by the timeout, and the test after them still runs and passes."""
    (tmp_path / "test_hangs.py").write_text(HANGING)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path),
         "-p", "no:cacheprovider", "-q", str(tmp_path / "test_hangs.py")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "2 failed, 1 passed" in out, out
    for name in ("test_awaits_for_ever", "test_waits_for_a_thread_that_never_ends"):
        assert f"FAILED test_hangs.py::{name} - Failed: Time" in out, out
    raised = [line for line in out.splitlines() if line.startswith("E ") and "Failed: Timeout (>2.0s)" in line]
    assert len(raised) == 2, out  # one per hanging test (the summary repeats them, whole when CI is set)
