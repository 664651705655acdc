"""Shared pieces of the generation dialects: token lists, TGI details, server-sent events."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from squeezer.api.errors import openai_error, tgi_error
from squeezer.api.stopping import MESSAGE, Stopping
from squeezer.errors import ClientError
from squeezer.generation.outputs import Generation, output_text
from squeezer.runtime.base import Completion, Vocabulary

log = logging.getLogger("squeezer.api")

# a grammar's dead end keeps its own name: no OpenAI reason says it, and "stop" would hide that the answer was cut
OPENAI_FINISH = {"eos_token": "stop", "stop_sequence": "stop", "length": "length", "grammar": "grammar"}


def tgi_token(vocabulary: Vocabulary, token: int, logprob: float | None) -> dict[str, Any]:
    """TGI's token object."""
    return {"id": token, "text": vocabulary.text(token), "logprob": logprob, "special": token in vocabulary.special_ids}


def tgi_top_tokens(vocabulary: Vocabulary, top: tuple[tuple[int, float], ...]) -> list[dict[str, Any]]:
    return [tgi_token(vocabulary, token, logprob) for token, logprob in top]


def tgi_details(generation: Generation, vocabulary: Vocabulary, top_n_tokens: int | None) -> dict[str, Any]:
    """TGI's details: why and after how many tokens it stopped, and each token with its logprob (when known)."""
    logprobs = generation.logprobs or [None] * len(generation.token_ids)
    details: dict[str, Any] = {
        "finish_reason": generation.finish_reason,
        "generated_tokens": generation.generated_tokens,
        "seed": generation.seed,
        "prefill": [],
        "tokens": [tgi_token(vocabulary, t, lp) for t, lp in zip(generation.token_ids, logprobs)],
    }
    if top_n_tokens and generation.top_tokens is not None:
        details["top_tokens"] = [tgi_top_tokens(vocabulary, top) for top in generation.top_tokens]
    return details


def tgi_outputs(completion: Completion) -> list[dict[str, Any]]:
    """One `{"generated_text", "details"?}` per returned sequence, as TGI and the Inference API answer."""
    outputs = []
    for generation in completion.generations:
        out: dict[str, Any] = {"generated_text": output_text(completion.prompt.text, generation.text, completion.params)}
        if completion.params.details:
            out["details"] = tgi_details(generation, completion.vocabulary, completion.params.top_n_tokens)
        outputs.append(out)
    return outputs


def strip_stop(text: str, stops: list[str] | None) -> str:
    """OpenAI answers never contain the stop sequence (TGI's keep it)."""
    for stop in stops or []:
        if text.endswith(stop):
            return text[: -len(stop)]
    return text


def sse(events: AsyncIterator[Any], stopping: Stopping, openai: bool = False) -> StreamingResponse:
    """Server-sent events, one JSON object per `data:` line; a failure mid-stream becomes an error event, and so
    does a shutdown whose grace runs out before the stream ends (`squeezer.api.stopping`). `openai`: OpenAI's
    stream, whose error events carry its error object and which ends with `data: [DONE]`; else TGI's, whose
    error events carry TGI's `error_type` where it has one for the status (see `squeezer.api.errors`).

    When the client disconnects, Starlette cancels the generator: the token stream it reads then frees
    the sequence's slot and cache at the next decode step.
    """

    async def body() -> AsyncIterator[bytes]:
        try:
            with stopping.watch() as interrupt:
                try:
                    async for event in events:
                        yield f"data: {json.dumps(event)}\n\n".encode()
                except asyncio.CancelledError:
                    if not interrupt.claim():
                        raise
                    yield error_event(503, MESSAGE, openai)
        except ClientError as exc:
            yield error_event(exc.status, str(exc), openai)
        except Exception as exc:  # headers are gone: the error travels in the stream
            log.exception("generation stream failed")
            yield error_event(500, f"internal error: {exc.__class__.__name__}", openai)
        if openai:
            yield b"data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


def error_event(status: int, message: str, openai: bool) -> bytes:
    """One stream's error event: OpenAI's error object, or TGI's `{"error", "error_type"}`."""
    event = (openai_error if openai else tgi_error)(status, message)
    return f"data: {json.dumps(event)}\n\n".encode()
