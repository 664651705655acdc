"""The Hugging Face Inference API dialect: `POST /models/{model_id}` (ids may hold slashes).

`/models/{id}/pipeline/{task}` picks a task explicitly, as the Inference API allows for models that serve
several (huggingface_hub uses it for feature-extraction and sentence-similarity); `/models/{id}/load` and
`/models/{id}/unload` manage a configured model at runtime. `POST /` is this route on the default model, as
TGI and TEI serve their one model at the root.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request

from squeezer.api.admin import shown_model
from squeezer.api.auth import require_admin_key, require_api_key, tenant_of
from squeezer.api.body import parse_json_or_text, read_body, waits_for_model
from squeezer.api.chat import chat_for_model
from squeezer.api.compat import shape_for_client
from squeezer.api.errors import CHAT_SUFFIX
from squeezer.api.responses import FastJSONResponse, result_headers, unless_disconnected
from squeezer.api.schemas import inference_api, request_body
from squeezer.api.tgi import generate_response
from squeezer.engine import Engine
from squeezer.errors import ClientError, UnknownModelError
from squeezer.runtime.base import GENERATE, INFER, STREAM

router = APIRouter(dependencies=[Depends(require_api_key)])

ACTIONS = ("load", "unload")


def split_model_path(path: str, known: set[str]) -> tuple[str, str | None, str | None]:
    """`org/name/pipeline/task` -> (`org/name`, task, None); `org/name/load` -> (`org/name`, None, "load");
    `org/name/v1/chat/completions` -> (`org/name`, None, "chat")."""
    if path in known:
        return path, None, None
    if path.endswith(CHAT_SUFFIX) and path.removesuffix(CHAT_SUFFIX):
        return path.removesuffix(CHAT_SUFFIX), None, "chat"
    head, sep, task = path.rpartition("/pipeline/")
    if sep and head and task and "/" not in task:
        return head, task, None
    head, _, action = path.rpartition("/")
    if action in ACTIONS and head:
        return head, None, action
    return path, None, None


def unpack(payload: Any) -> tuple[Any, Any, dict[str, Any]]:
    """The Inference API body: {"inputs", "parameters", "options"}, or bare inputs (a string or a list)."""
    if isinstance(payload, dict):
        if "inputs" not in payload:
            raise ClientError("inputs: missing; send {\"inputs\": ..., \"parameters\": {...}}", status=422)
        options = payload.get("options")
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise ClientError(f"options: expected an object, got {type(options).__name__}", status=422)
        return payload["inputs"], payload.get("parameters"), options
    if isinstance(payload, (str, list)):
        return payload, None, {}
    raise ClientError(f"inputs: expected a string, a list or an object, got {type(payload).__name__}", status=422)


def option(options: dict[str, Any], name: str, default: bool) -> bool:
    value = options.get(name, default)
    if not isinstance(value, bool):
        raise ClientError(f"options.{name}: expected a boolean, got {value!r}", status=422)
    return value


async def generation(engine: Engine, request: Request, model_id: str, inputs: Any, parameters: Any, payload: Any, wait: bool) -> Any:
    """A generative model on the Inference API route: `[{"generated_text"}]`, or TGI's stream with "stream": true."""
    stream = isinstance(payload, dict) and payload.get("stream") is True
    if isinstance(inputs, list) and not stream:
        if not inputs:
            raise ClientError("inputs: must not be an empty list", status=422)
        answers = [generate_response(engine, request, model_id, prompt, parameters, False, wait) for prompt in inputs]
        return FastJSONResponse(list(await asyncio.gather(*answers)))
    result = await generate_response(engine, request, model_id, inputs, parameters, stream, wait)
    return result if stream else FastJSONResponse(result)


@router.post("/", openapi_extra=request_body(inference_api(), text=True))
async def infer_root(request: Request) -> FastJSONResponse:
    """The server's root, as TGI and TEI answer it: a client given only the server's address (TGI users write
    `InferenceClient("http://host:8080")`) posts there. It is this route on the served model, the first
    generative one when several are served: `[{"generated_text"}]`, or TGI's stream with "stream": true."""
    engine: Engine = request.app.state.engine
    try:
        model_id = engine.resolve(None, GENERATE)
    except UnknownModelError:  # no generative model: the first that answers the Inference API
        model_id = engine.resolve(None, INFER)
    return await answer(request, model_id, None)


@router.post("/models/{model_path:path}", openapi_extra=request_body(inference_api(), text=True))
async def infer(model_path: str, request: Request) -> FastJSONResponse:
    """The Inference API on a served model (the id may hold slashes), and the routes below it:

    - `/models/{id}/pipeline/{task}`: the same, with the task chosen;
    - `/models/{id}/v1/chat/completions`: OpenAI chat (the body of `POST /v1/chat/completions`), where
      huggingface_hub sends it for a model URL;
    - `/models/{id}/load`, `/models/{id}/unload`: load or unload a configured model (no body; the admin key
      when one is set).
    """
    engine: Engine = request.app.state.engine
    model_id, task, action = split_model_path(model_path, set(engine.model_ids()))
    if action in ACTIONS:
        require_admin_key(request)
    if action == "load":
        return FastJSONResponse(shown_model(await engine.load(model_id), request.app.state.server_config))
    if action == "unload":
        return FastJSONResponse(shown_model(await engine.unload(model_id), request.app.state.server_config))
    if action == "chat":
        return await chat_for_model(request, model_id)
    return await answer(request, model_id, task)


async def answer(request: Request, model_id: str, task: str | None) -> FastJSONResponse:
    """One Inference API request to a model, for the task its path names (None: the model's own)."""
    engine: Engine = request.app.state.engine
    payload = parse_json_or_text(request, await read_body(request, request.app.state.server_config.max_payload_bytes))
    inputs, parameters, options = unpack(payload)
    wait = option(options, "wait_for_model", False) or waits_for_model(request)
    await engine.ready(model_id, wait)
    capabilities = engine.capabilities(model_id)
    streamed = isinstance(payload, dict) and payload.get("stream") is True
    if INFER not in capabilities or (streamed and STREAM in capabilities):  # TGI streams seq2seq models too
        served = engine.task(model_id)
        if task is not None and served is not None and task != served:  # a generator answers for its own task only
            raise ClientError(f"model {model_id} cannot serve {task}; it serves: {served}", status=400)
        return await generation(engine, request, model_id, inputs, parameters, payload, wait)
    run = engine.run(model_id, inputs, parameters, task=task, wait_for_model=wait, use_cache=option(options, "use_cache", True),
                     scope=tenant_of(request))
    result = await unless_disconnected(request, run)
    request.app.state.metrics.observe_timings(result.timings)
    output = shape_for_client(result.answer.task, result.output, inputs, request.headers.get("user-agent", ""))
    return FastJSONResponse(output, headers=result_headers(result))
