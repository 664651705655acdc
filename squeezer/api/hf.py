"""The Hugging Face Inference API dialect: `POST /models/{model_id}` (ids may hold slashes).

`/models/{id}/pipeline/{task}` picks a task explicitly, as the Inference API allows for models that serve
several (huggingface_hub uses it for feature-extraction and sentence-similarity).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from squeezer.api.body import parse_json_or_text, read_body
from squeezer.engine import Engine
from squeezer.errors import ClientError

router = APIRouter()


def split_model_path(path: str) -> tuple[str, str | None]:
    """`org/name/pipeline/task` -> (`org/name`, `task`); a plain id has no task."""
    head, sep, task = path.rpartition("/pipeline/")
    if sep and head and task and "/" not in task:
        return head, task
    return path, None


def unpack(payload: Any) -> tuple[Any, Any, dict[str, Any]]:
    """The Inference API body: {"inputs", "parameters", "options"}, or bare inputs (a string or a list)."""
    if isinstance(payload, dict):
        if "inputs" not in payload:
            raise ClientError("inputs: missing; send {\"inputs\": ..., \"parameters\": {...}}", status=422)
        options = payload.get("options") or {}
        if not isinstance(options, dict):
            raise ClientError(f"options: expected an object, got {type(options).__name__}", status=422)
        return payload["inputs"], payload.get("parameters"), options
    if isinstance(payload, (str, list)):
        return payload, None, {}
    raise ClientError(f"inputs: expected a string, a list or an object, got {type(payload).__name__}", status=422)


def wants_wait(request: Request, options: dict[str, Any]) -> bool:
    header = request.headers.get("x-wait-for-model", "").lower() in {"1", "true", "yes"}
    return bool(options.get("wait_for_model")) or header


@router.post("/models/{model_path:path}")
async def infer(model_path: str, request: Request) -> JSONResponse:
    started = time.perf_counter()
    engine: Engine = request.app.state.engine
    model_id, task = split_model_path(model_path)
    body = await read_body(request, request.app.state.server_config.max_payload_bytes)
    inputs, parameters, options = unpack(parse_json_or_text(request, body))
    result = await engine.run(model_id, inputs, parameters, task=task, wait_for_model=wants_wait(request, options))
    headers = {
        "x-squeezer-task": result.task,
        "x-squeezer-input-tokens": str(result.n_tokens),
        "x-compute-time": f"{time.perf_counter() - started:.6f}",
        "x-compute-type": "cpu",
    }
    if result.truncated:
        headers["x-squeezer-truncated"] = "true"
    return JSONResponse(result.output, headers=headers)
