"""Operational routes: health, server info, the model list."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from squeezer.api.auth import require_api_key
from squeezer.artifact import versions
from squeezer.engine import Engine

router = APIRouter()  # /health stays open; the rest of this module needs the API key when one is set

@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """200 once no model is still loading; 503 before. Never behind the API key."""
    engine: Engine = request.app.state.engine
    states = {m["id"]: m["state"] for m in engine.models()}
    loading = any(state == "loading" for state in states.values())
    return JSONResponse({"status": "loading" if loading else "ok", "models": states}, status_code=503 if loading else 200)


@router.get("/info", dependencies=[Depends(require_api_key)])
async def info(request: Request) -> dict[str, Any]:
    engine: Engine = request.app.state.engine
    server = request.app.state.server_config
    limits = {"max_payload_bytes": server.max_payload_bytes, **asdict(engine.config.limits), **asdict(engine.config.batching)}
    return {"models": engine.models(), "versions": versions(), "limits": limits, "auth": bool(server.api_key)}


@router.get("/models", dependencies=[Depends(require_api_key)])
async def models(request: Request) -> list[dict[str, Any]]:
    engine: Engine = request.app.state.engine
    return engine.models()
