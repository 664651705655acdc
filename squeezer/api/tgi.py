"""The text-generation-inference dialect: `POST /generate` and `POST /generate_stream`.

TGI serves one model: here the body may name one with `model`, else the first served model that generates
answers (`Engine.resolve`). The Inference API route (`POST /models/{id}` on a generative model) shares these
shapes (see hf.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from squeezer.api.auth import require_api_key, tenant_of
from squeezer.api.body import model_name, read_json_object, waits_for_model
from squeezer.api.generation import sse, tgi_outputs, tgi_top_tokens
from squeezer.api.responses import FastJSONResponse, unless_disconnected
from squeezer.api.schemas import request_body, tgi_generate
from squeezer.engine import Engine
from squeezer.generation.outputs import output_text
from squeezer.runtime.base import GENERATE, STREAM, Streaming

router = APIRouter(dependencies=[Depends(require_api_key)])


async def tgi_events(streaming: Streaming) -> AsyncIterator[dict[str, Any]]:
    """TGI's stream: one event per token (its top alternatives when `top_n_tokens` asks); the last carries the
    whole text and the details."""
    text, vocabulary = "", streaming.vocabulary
    async for event in streaming.events:
        text += event.text
        last = event.is_last
        out = {
            "index": event.generated_tokens,
            "token": {"id": event.token_id, "text": event.text, "logprob": event.logprob,
                      "special": event.token_id in vocabulary.special_ids},
            "generated_text": output_text(streaming.prompt.text, text, streaming.params) if last else None,
            "details": {"finish_reason": event.finish_reason, "generated_tokens": event.generated_tokens, "seed": event.seed}
            if last
            else None,
        }
        if streaming.params.top_n_tokens:
            out["top_tokens"] = tgi_top_tokens(vocabulary, event.top_tokens)
        yield out


async def generate_response(engine: Engine, request: Request, model_id: str, prompt: Any, parameters: Any, stream: bool, wait: bool) -> Any:
    """Answer one prompt, streamed (SSE) or whole; the HF route calls this for generative models too."""
    if stream:
        streaming = await engine.stream(model_id, prompt, parameters=parameters, wait_for_model=wait, scope=tenant_of(request))
        return sse(tgi_events(streaming), request.app.state.stopping)
    generating = engine.generate(model_id, prompt, parameters=parameters, wait_for_model=wait, scope=tenant_of(request))
    completion = await unless_disconnected(request, generating)
    return tgi_outputs(completion)


@router.post("/generate", openapi_extra=request_body(tgi_generate()))
async def generate(request: Request) -> FastJSONResponse:
    engine: Engine = request.app.state.engine
    body = await read_json_object(request, request.app.state.server_config.max_payload_bytes)
    model_id = engine.resolve(model_name(body), GENERATE)
    outputs = await generate_response(engine, request, model_id, body.get("inputs"), body.get("parameters"), False,
                                      waits_for_model(request))
    return FastJSONResponse(outputs[0])


@router.post("/generate_stream", openapi_extra=request_body(tgi_generate()))
async def generate_stream(request: Request) -> StreamingResponse:
    engine: Engine = request.app.state.engine
    body = await read_json_object(request, request.app.state.server_config.max_payload_bytes)
    model_id = engine.resolve(model_name(body), STREAM)
    return await generate_response(engine, request, model_id, body.get("inputs"), body.get("parameters"), True,
                                 waits_for_model(request))
