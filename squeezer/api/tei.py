"""The text-embeddings-inference dialect: `POST /embed` and `POST /tokenize`.

TEI serves one model; here the body may name one with `model`, else the first served model answers.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from squeezer.api.auth import require_api_key
from squeezer.api.body import read_json_object
from squeezer.api.responses import FastJSONResponse, result_headers, unless_disconnected
from squeezer.engine import Engine
from squeezer.errors import ClientError
from squeezer.tasks.base import text_items

router = APIRouter(dependencies=[Depends(require_api_key)])


def chosen_model(engine: Engine, body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        return engine.model_ids()[0]
    if not isinstance(model, str):
        raise ClientError("model: expected a string", status=422)
    return model


def flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise ClientError(f"{name}: expected a boolean, got {value!r}", status=422)
    return value


@router.post("/embed")
async def embed(request: Request) -> FastJSONResponse:
    """Always a list of vectors, one per input; `truncate` defaults to false, as in TEI."""
    engine: Engine = request.app.state.engine
    body = await read_json_object(request, request.app.state.server_config.max_payload_bytes)
    texts, _ = text_items(body.get("inputs"))
    parameters = {"normalize": flag(body, "normalize", True), "truncate": flag(body, "truncate", False)}
    run = engine.run(chosen_model(engine, body), texts, parameters, task="feature-extraction")
    result = await unless_disconnected(request, run)
    request.app.state.metrics.observe_timings(result.timings)
    return FastJSONResponse(result.output, headers=result_headers(result))


@router.post("/tokenize")
async def tokenize(request: Request) -> list[list[dict[str, Any]]]:
    """Tokens with ids, text and character offsets, as TEI returns them."""
    engine: Engine = request.app.state.engine
    body = await read_json_object(request, request.app.state.server_config.max_payload_bytes)
    texts, _ = text_items(body.get("inputs"))
    tokenizer = engine.tokenizer(chosen_model(engine, body))
    add_special = flag(body, "add_special_tokens", True)
    return [token_list(tokenizer, text, add_special) for text in texts]


def token_list(tokenizer: Any, text: str, add_special: bool) -> list[dict[str, Any]]:
    enc = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True, return_special_tokens_mask=True)
    tokens = []
    for tid, (start, stop), special in zip(enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]):
        if special:
            tokens.append({"id": tid, "text": tokenizer.convert_ids_to_tokens(tid), "special": True, "start": None, "stop": None})
        else:
            tokens.append({"id": tid, "text": text[start:stop], "special": False, "start": start, "stop": stop})
    return tokens
