"""The OpenAI dialect for embeddings: `POST /v1/embeddings` and `GET /v1/models`, as the openai client expects."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request

from squeezer.api.auth import require_api_key, tenant_of
from squeezer.api.body import model_name, read_json_object, waits_for_model
from squeezer.api.responses import FastJSONResponse, result_headers, unless_disconnected
from squeezer.api.schemas import openai_embeddings, request_body
from squeezer.engine import Engine
from squeezer.errors import ClientError
from squeezer.runtime.base import EMBED

router = APIRouter(dependencies=[Depends(require_api_key)])


def embedding_inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    if isinstance(value, list) and value and all(isinstance(v, (int, list)) for v in value):
        raise ClientError("input: token-id inputs are not supported; send text", status=422)
    raise ClientError("input: expected a non-empty string or a non-empty list of strings", status=422)


def shape_vector(vector: list[float], dimensions: int | None, encoding: str) -> Any:
    """Cut to `dimensions` (re-normalized, as OpenAI's shortened embeddings are) and encode."""
    array = np.asarray(vector, dtype=np.float32)
    if dimensions is not None:
        if dimensions > array.shape[0]:
            raise ClientError(f"dimensions: {dimensions} exceeds this model's {array.shape[0]} dimensions", status=422)
        array = array[:dimensions]
        array = array / max(float(np.linalg.norm(array)), 1e-12)
    if encoding == "base64":
        return base64.b64encode(array.astype("<f4").tobytes()).decode("ascii")
    return array.tolist()


def check_options(body: dict[str, Any]) -> tuple[str, int | None]:
    encoding = body.get("encoding_format") or "float"
    if not isinstance(encoding, str) or encoding not in {"float", "base64"}:
        raise ClientError("encoding_format: must be float or base64", status=422)
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1):
        raise ClientError("dimensions: must be a positive integer", status=422)
    return encoding, dimensions


@router.post("/v1/embeddings", openapi_extra=request_body(openai_embeddings()))
async def embeddings(request: Request) -> FastJSONResponse:
    engine: Engine = request.app.state.engine
    body = await read_json_object(request, request.app.state.server_config.max_payload_bytes)
    model = engine.resolve(model_name(body), EMBED)  # omitted: the first model that embeds, as on every route
    texts = embedding_inputs(body.get("input"))
    encoding, dimensions = check_options(body)
    run = engine.run(model, texts, {"normalize": True}, task="feature-extraction", wait_for_model=waits_for_model(request),
                     scope=tenant_of(request))
    result = await unless_disconnected(request, run)
    request.app.state.metrics.observe_timings(result.timings)
    data = [
        {"object": "embedding", "index": i, "embedding": shape_vector(vector, dimensions, encoding)}
        for i, vector in enumerate(result.output)
    ]
    usage = {"prompt_tokens": result.answer.n_tokens, "total_tokens": result.answer.n_tokens}
    return FastJSONResponse({"object": "list", "data": data, "model": model, "usage": usage}, headers=result_headers(result))


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    engine: Engine = request.app.state.engine
    data = [{"id": m["id"], "object": "model", "created": 0, "owned_by": "squeezer"} for m in engine.models()]
    return {"object": "list", "data": data}
