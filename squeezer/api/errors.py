"""Every error leaves as JSON with the right status, in the dialect of the route it answers; nothing a client
sends is a 500.

The Inference API's and TGI's routes answer `{"error": "..."}` with TGI's `error_type` where TGI has one for the
status (huggingface_hub's text_generation, which posts to `/` or a model's URL, raises those as typed exceptions:
ValidationError, OverloadedError); TEI's routes with TEI's `error_type` names. The OpenAI routes answer
OpenAI's object, `{"error": {"message", "type", "param", "code"}}` (`code` the HTTP status, as vLLM sends it):
the openai client reads the reason only from `error.message`, so with a plain string its users saw "Error code:
422" and no why, and a stream's error event read "An error occurred during streaming".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from squeezer.errors import ClientError

log = logging.getLogger("squeezer.api")
CHAT_SUFFIX = "/v1/chat/completions"  # a model's own OpenAI chat route: `/models/{id}/v1/chat/completions`
# OpenAI's error types by status (its API's names, where it has one); other 4xx are invalid requests.
OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
                500: "server_error", 503: "service_unavailable_error", 504: "timeout_error"}


def speaks_openai(path: str) -> bool:
    """Whether a request path is an OpenAI route: `/v1/...`, or a model's `/models/{id}/v1/chat/completions`."""
    return path.startswith("/v1/") or path.endswith(CHAT_SUFFIX)


def openai_error(status: int, message: str, **extra: Any) -> dict[str, Any]:
    """OpenAI's error object; `extra` (a loading model's `estimated_time`) inside it."""
    kind = OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": status, **extra}}


# TGI's error types by status; statuses TGI has no type for (401, 404, 503 while a model loads) answer without
# one, so huggingface_hub raises its HTTP error, which names the status, rather than an UnknownError.
TGI_TYPES = {400: "validation", 413: "validation", 422: "validation", 429: "overloaded"}


def tgi_error(status: int, message: str, **extra: Any) -> dict[str, Any]:
    """TGI's error: `error_type` as TGI names it, where it has a name for the status."""
    kind = TGI_TYPES.get(status, "generation" if status >= 500 else None)
    return {"error": message, **({"error_type": kind} if kind else {}), **extra}


def tei_error(status: int, message: str, **extra: Any) -> dict[str, Any]:
    """TEI's error, with its `error_type` names."""
    kind = {429: "Overloaded", 503: "Unhealthy"}.get(status, "Validation" if status < 500 else "Backend")
    return {"error": message, "error_type": kind, **extra}


ErrorBody = Callable[..., dict[str, Any]]  # (status, message, **extra) -> the JSON body
DIALECTS: dict[str, ErrorBody] = {"/embed": tei_error, "/tokenize": tei_error}  # else TGI's; OpenAI's by `speaks_openai`


def error_body(path: str, status: int, message: str, **extra: Any) -> dict[str, Any]:
    """The error JSON for a request to `path`, in its route's dialect."""
    shape = openai_error if speaks_openai(path) else DIALECTS.get(path, tgi_error)
    return shape(status, message, **extra)


def error_response(request: Request, status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(request.url.path, status, message, **extra), status_code=status)


def _field(loc: tuple[object, ...]) -> str:
    return ".".join(str(part) for part in loc if part != "body") or "body"


def install_error_handlers(app: FastAPI) -> None:
    """Map the engine's ClientErrors, validation failures and routing misses to JSON errors."""

    @app.exception_handler(ClientError)
    async def client_error(request: Request, exc: ClientError) -> JSONResponse:
        return error_response(request, exc.status, str(exc), **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        return error_response(request, 422, f"{_field(tuple(first.get('loc', ())))}: {first.get('msg')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(request, exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(request, 500, f"internal error: {exc.__class__.__name__}")
