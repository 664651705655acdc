"""The text-embeddings-inference dialect: `POST /embed` and `POST /tokenize`.

TEI serves one model; here the body may name one with `model`, else the first served model that can answers
(`Engine.resolve`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from squeezer.api.auth import require_api_key, tenant_of
from squeezer.api.body import model_name, read_json_object, waits_for_model
from squeezer.api.responses import FastJSONResponse, result_headers, unless_disconnected
from squeezer.api.schemas import request_body, tei_embed, tei_tokenize
from squeezer.engine import Engine
from squeezer.errors import ClientError
from squeezer.runtime.base import EMBED, TOKENIZE
from squeezer.tasks.base import text_items

router = APIRouter(dependencies=[Depends(require_api_key)])


def flag(body: dict[str, Any], name: str, default: bool | None) -> Any:
    """A boolean field of the body; `default` when absent."""
    value = body.get(name, default)
    if value is not default and not isinstance(value, bool):
        raise ClientError(f"{name}: expected a boolean, got {value!r}", status=422)
    return value


@router.post("/embed", openapi_extra=request_body(tei_embed()))
async def embed(request: Request) -> FastJSONResponse:
    """Always a list of vectors, one per input; `truncate` defaults to false, as in TEI."""
    engine: Engine = request.app.state.engine
    body = await read_json_object(request, request.app.state.server_config.max_payload_bytes)
    texts, _ = text_items(body.get("inputs"))
    parameters = {"normalize": flag(body, "normalize", True), "truncate": flag(body, "truncate", False)}
    run = engine.run(engine.resolve(model_name(body), EMBED), texts, parameters, task="feature-extraction",
                     wait_for_model=waits_for_model(request), scope=tenant_of(request))
    result = await unless_disconnected(request, run)
    request.app.state.metrics.observe_timings(result.timings)
    return FastJSONResponse(result.output, headers=result_headers(result))


@router.post("/tokenize", openapi_extra=request_body(tei_tokenize()))
async def tokenize(request: Request) -> FastJSONResponse:
    """Tokens with ids, text and character offsets, as TEI returns them; special tokens are added as the model's
    own requests add them unless `add_special_tokens` says (an encoder's input has them, a generation prompt not)."""
    engine: Engine = request.app.state.engine
    body = await read_json_object(request, request.app.state.server_config.max_payload_bytes)
    texts, _ = text_items(body.get("inputs"))
    spans = await engine.tokenize(engine.resolve(model_name(body), TOKENIZE), texts, flag(body, "add_special_tokens", None))
    # orjson writes the spans (dataclasses) as they are: a request near the limits has some 600k of them, which
    # FastAPI's own encoder took seconds over, holding the event loop and every other client (measured: /health 10 s)
    return FastJSONResponse(spans)
