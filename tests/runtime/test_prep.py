"""Request preparation runs off the event loop (issue 13, item 2): a request that takes a second to tokenize
leaves the loop free for everyone else meanwhile, and it is tokenized on the model's prep thread."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from squeezer.config import LimitsConfig, ServeConfig
from squeezer.engine import Engine
from squeezer.sources import ModelSource

pytestmark = pytest.mark.asyncio


async def ticks_while(work: asyncio.Future) -> tuple[int, float]:
    """How often a 1 ms ticker ran on the event loop while `work` ran, and its longest wait."""
    ticks, worst, last = 0, 0.0, time.perf_counter()
    while not work.done():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        ticks, worst, last = ticks + 1, max(worst, now - last), now
    return ticks, worst


async def test_a_heavy_request_leaves_the_loop_free(tiny_model) -> None:
    engine = Engine([ModelSource("m", tiny_model("bert", "base"))], ServeConfig(limits=LimitsConfig(request_timeout=0)))
    await engine.start()
    try:
        info = engine.registry.entries["m"].runtime.model.info  # type: ignore[union-attr]
        threads: set[str] = set()
        encode = info.encode

        def recording(*args, **kwargs):
            threads.add(threading.current_thread().name)
            return encode(*args, **kwargs)

        info.encode = recording
        texts = [f"{i} " + "many words of a long input text " * 3000 for i in range(12)]  # 12 x ~100k characters
        work = asyncio.ensure_future(engine.run("m", texts, {"truncate": True}, use_cache=False))
        ticks, stall = await ticks_while(work)
        result = work.result()
        assert len(result.output) == 12 and result.answer.truncated
        assert threads and all(name.startswith("squeezer-prep") for name in threads), threads
        # tokenizing took most of a second, and the loop went on meanwhile (on it, the ticker would not run at all;
        # counted, not timed, so a busy machine cannot fail it: here it ticks hundreds of times, waiting 30 ms at most)
        assert result.timings.tokenize > 0.3, result.timings
        assert ticks > 20 * result.timings.tokenize, (ticks, stall, result.timings.tokenize)
    finally:
        await engine.close()
