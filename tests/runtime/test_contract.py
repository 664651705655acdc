"""The Runtime contract, the same for every kind: capabilities, describe, stats, back-pressure, drain.

Each kind is loaded through `load_runtime` from a tiny random-weight model (an encoder, a causal LM, an
encoder-decoder) and driven only through its protocol, as the engine drives it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from squeezer.config import BatchingConfig, DecodingConfig, ServeConfig
from squeezer.errors import ModelNotReadyError, QueueFullError
from squeezer.runtime import RUNTIMES, Hooks, Runtime, capabilities_for, load_runtime
from squeezer.runtime.base import CHAT, EMBED, GENERATE, INFER, STREAM, TOKENIZE, Inferring
from squeezer.sources import ModelSource

# Small queues, so one request can pass the bound: 2 sequences (encoders), 2 inputs (encoder-decoders), one
# waiting generation request (causal LMs).
CONFIG = ServeConfig(batching=BatchingConfig(max_queue=2), decoding=DecodingConfig(max_waiting=1))
KINDS = {
    "encoder": ("feature-extraction", {INFER, EMBED, TOKENIZE}),
    "causal-lm": ("text-generation", {GENERATE, STREAM, CHAT, TOKENIZE}),
    "seq2seq": ("text2text-generation", {INFER, GENERATE, STREAM, TOKENIZE}),
}
DESCRIBED = {"task", "tasks", "backend", "device", "dtype"}


def load(kind: str, folders: dict[str, Callable[[], Path]]) -> Runtime:
    return load_runtime(ModelSource(kind, folders[kind]()), CONFIG, Hooks())


@pytest.fixture(scope="module")
def folders(tiny_model: Callable[..., Path], tiny_decoder_path: Callable[..., Path],
            tiny_seq2seq_path: Callable[..., Path]) -> dict[str, Callable[[], Path]]:
    return {"encoder": lambda: tiny_model("bert", "base"), "causal-lm": lambda: tiny_decoder_path("llama"),
            "seq2seq": lambda: tiny_seq2seq_path("t5")}


@pytest.fixture(scope="module", params=list(KINDS))
def loaded(request: pytest.FixtureRequest, folders: dict[str, Callable[[], Path]]) -> Iterator[Runtime]:
    """One runtime of each kind, loaded once; each test starts its workers on its own event loop."""
    runtime = load(request.param, folders)
    yield runtime
    runtime.close()


@pytest.fixture
async def runtime(loaded: Runtime) -> AsyncIterator[Runtime]:
    loaded.start()
    yield loaded
    await loaded.drain()


async def one_request(runtime: Runtime, size: int = 1) -> Any:
    """What the engine would run for this runtime: an Inference API answer, else a generation."""
    texts = ["The quick brown fox"] * size
    if INFER in runtime.capabilities:
        return await runtime.infer(texts if size > 1 else texts[0], {"max_new_tokens": 3} if runtime.kind == "seq2seq" else None, None)
    params = {"max_new_tokens": 3}
    if size > 1:
        params.update(do_sample=True, num_return_sequences=size)
    generating: Any = runtime
    return await generating.generate(generating.prepare(texts[0], None, params))


def test_the_table_serves_every_task_once() -> None:
    tasks = [task for kind in RUNTIMES for task in kind.tasks]
    assert len(tasks) == len(set(tasks)) and {kind.name for kind in RUNTIMES} == set(KINDS)


async def test_capabilities_are_known_before_loading_and_kept_after(runtime: Runtime) -> None:
    task, expected = KINDS[runtime.kind]
    assert runtime.task == task
    assert runtime.capabilities == capabilities_for(task) == frozenset(expected)


async def test_describe_and_stats(runtime: Runtime) -> None:
    facts = runtime.describe()
    assert DESCRIBED <= set(facts) and facts["task"] == runtime.task and facts["backend"] == "torch"
    assert runtime.memory_bytes > 0
    await one_request(runtime)
    stats = runtime.stats()
    assert stats.queue_depth == 0
    assert (stats.occupancy is not None) == (runtime.kind == "causal-lm")
    if runtime.kind == "encoder":  # the repeated text is tokenized once
        await one_request(runtime)
        assert stats.token_cache is not None and runtime.stats().token_cache.hits > stats.token_cache.hits  # type: ignore[union-attr]


async def test_vocabulary_decodes_tokens_and_spans(runtime: Runtime) -> None:
    spans = runtime.vocabulary.spans("The quick brown fox", True)
    plain = [s for s in spans if not s.special]
    assert plain and all("The quick brown fox"[s.start:s.stop] == s.text for s in plain)  # type: ignore[misc]
    assert runtime.vocabulary.text(plain[0].id).strip().lower() == "the"  # uncased vocabularies lower it


async def test_more_work_than_the_queue_holds_is_refused_at_once(runtime: Runtime) -> None:
    with pytest.raises(QueueFullError):
        await one_request(runtime, size=3)
    assert runtime.stats().queue_depth == 0
    assert await one_request(runtime)  # nothing was left queued


async def test_drain_finishes_accepted_work_then_refuses(loaded: Runtime) -> None:
    loaded.start()
    accepted = asyncio.ensure_future(one_request(loaded))
    await asyncio.sleep(0)  # queued before the drain begins
    await loaded.drain()
    assert accepted.done() and accepted.result()
    with pytest.raises(ModelNotReadyError):
        await one_request(loaded)


async def test_capabilities_match_the_protocol_methods(runtime: Runtime) -> None:
    """A runtime has the methods of exactly the capabilities it declares (the engine calls them by capability)."""
    caps = runtime.capabilities
    assert hasattr(runtime, "infer") == (INFER in caps)
    assert hasattr(runtime, "generate") == hasattr(runtime, "prepare") == (GENERATE in caps)
    assert hasattr(runtime, "stream") == (STREAM in caps)


@pytest.mark.parametrize("loaded", ["encoder", "seq2seq"], indirect=True)
async def test_an_inferring_runtime_reports_where_its_time_went(runtime: Runtime) -> None:
    inferring: Inferring = runtime  # type: ignore[assignment]
    result = await inferring.infer("The quick brown fox", {"max_new_tokens": 3} if runtime.kind == "seq2seq" else None, None)
    assert result.answer.task == runtime.task and result.answer.n_tokens > 0
    assert result.inference_seconds > 0 and result.tokenize_seconds >= 0 and result.queue_seconds >= 0
