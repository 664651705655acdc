"""The text-generation-inference dialect: `POST /generate` and `POST /generate_stream`.

TGI serves one model: here the body may name one with `model`, else the first served model answers. The
Inference API route (`POST /models/{id}` on a generative model) shares these shapes (see hf.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from squeezer.api.auth import require_api_key
from squeezer.api.body import read_json_object
from squeezer.api.generation import sse, tgi_outputs, tgi_top_tokens
from squeezer.api.responses import FastJSONResponse, unless_disconnected
from squeezer.completions import Streaming
from squeezer.engine import Engine
from squeezer.errors import ClientError
from squeezer.tasks import GENERATION_TASKS, SEQ2SEQ_TASKS
from squeezer.tasks.generation import output_text

router = APIRouter(dependencies=[Depends(require_api_key)])


def generation_model(engine: Engine, body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ClientError("model: expected a string", status=422)
    if model:
        return model
    loaded = [m for m in engine.model_ids() if engine.task_of(m) in (*GENERATION_TASKS, *SEQ2SEQ_TASKS)]
    return (loaded or engine.model_ids())[0]


async def tgi_events(streaming: Streaming, tokenizer: Any) -> AsyncIterator[dict[str, Any]]:
    """TGI's stream: one event per token (its top alternatives when `top_n_tokens` asks); the last carries the
    whole text and the details."""
    text, special = "", set(tokenizer.all_special_ids)
    async for event in streaming.events:
        text += event.text
        last = event.is_last
        out = {
            "index": event.generated_tokens,
            "token": {"id": event.token_id, "text": event.text, "logprob": event.logprob, "special": event.token_id in special},
            "generated_text": output_text(streaming.prompt.text, text, streaming.params) if last else None,
            "details": {"finish_reason": event.finish_reason, "generated_tokens": event.generated_tokens, "seed": event.seed}
            if last
            else None,
        }
        if streaming.params.top_n_tokens:
            out["top_tokens"] = tgi_top_tokens(tokenizer, event.top_tokens, special)
        yield out


async def generate_response(engine: Engine, request: Request, model_id: str, prompt: Any, parameters: Any, stream: bool, wait: bool) -> Any:
    """Answer one prompt, streamed (SSE) or whole; the HF route calls this for generative models too."""
    if stream:
        streaming = await engine.stream(model_id, prompt, parameters=parameters, wait_for_model=wait)
        return sse(tgi_events(streaming, engine.tokenizer(model_id)))
    completion = await unless_disconnected(request, engine.generate(model_id, prompt, parameters=parameters, wait_for_model=wait))
    return tgi_outputs(completion, engine.tokenizer(model_id))


@router.post("/generate")
async def generate(request: Request) -> FastJSONResponse:
    engine: Engine = request.app.state.engine
    body = await read_json_object(request, request.app.state.server_config.max_payload_bytes)
    outputs = await generate_response(engine, request, generation_model(engine, body), body.get("inputs"), body.get("parameters"), False, False)
    return FastJSONResponse(outputs[0])


@router.post("/generate_stream")
async def generate_stream(request: Request) -> StreamingResponse:
    engine: Engine = request.app.state.engine
    body = await read_json_object(request, request.app.state.server_config.max_payload_bytes)
    return await generate_response(engine, request, generation_model(engine, body), body.get("inputs"), body.get("parameters"), True, False)
