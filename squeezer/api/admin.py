"""Operational routes: health, server info, the model list."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from squeezer.api.auth import require_api_key
from squeezer.artifact import versions
from squeezer.config import ServerConfig
from squeezer.engine import Engine

router = APIRouter()  # /health stays open; the rest of this module needs the API key when one is set

def shown(engine: Engine, server: ServerConfig) -> list[dict[str, Any]]:
    """The models as /info and /models show them (see `shown_model`)."""
    return [shown_model(model, server) for model in engine.models()]


def shown_model(model: dict[str, Any], server: ServerConfig) -> dict[str, Any]:
    """A model as every route shows it: its source named by the last path part, so the server's file layout
    stays private, unless --show-paths."""
    return model if server.show_paths else {**model, "source": Path(model["source"]).name}


@router.get("/health")
async def health(request: Request, model: str | None = None) -> JSONResponse:
    """Whether this server can answer: 503 until every model has loaded (or failed) once at startup, then 200,
    even while a model reloads after an unload or an eviction (that must not take the whole replica out of a
    load balancer). `?model=ID` asks about one model: 200 only while it is ready. Never behind the API key."""
    engine: Engine = request.app.state.engine
    states = {m["id"]: m["state"] for m in engine.models()}
    if model is not None:
        engine.capabilities(model)  # 404 for a model not served here
        ready = states[model] == "ready"
        return JSONResponse({"status": "ok" if ready else states[model], "models": {model: states[model]}},
                            status_code=200 if ready else 503)
    starting = engine.starting()
    return JSONResponse({"status": "loading" if starting else "ok", "models": states}, status_code=503 if starting else 200)


@router.get("/info", dependencies=[Depends(require_api_key)])
async def info(request: Request) -> dict[str, Any]:
    engine: Engine = request.app.state.engine
    server = request.app.state.server_config
    limits = {"max_payload_bytes": server.max_payload_bytes, **asdict(engine.config.limits), **asdict(engine.config.batching)}
    return {"models": shown(engine, server), "versions": versions(), "limits": limits, "auth": bool(request.app.state.api_keys)}


@router.get("/models", dependencies=[Depends(require_api_key)])
async def models(request: Request) -> list[dict[str, Any]]:
    return shown(request.app.state.engine, request.app.state.server_config)
