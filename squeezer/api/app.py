"""The app factory: an ASGI app around one engine. Server state lives on `app.state`, never in globals."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from squeezer.api import admin, chat, hf, metrics, openai, tei, tgi
from squeezer.api.access import AccessLog
from squeezer.api.docs import install_docs
from squeezer.api.errors import install_error_handlers
from squeezer.api.guard import Guard
from squeezer.api.stopping import Stopping
from squeezer.config import read_api_keys
from squeezer.engine import Engine

log = logging.getLogger("squeezer.api")


def quiet_fastapi() -> dict[str, Any]:
    """Turn off FastAPI's built-in OpenTelemetry hooks where it has them: they read the environment on
    every request, and this server exports its own Prometheus metrics."""
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    return {}


def create_app(engine: Engine) -> FastAPI:
    """Build the HTTP app around an engine (its `config.server` says what the server accepts); models start
    loading when the app starts, and finish their queued work and are freed when it stops (after uvicorn has
    drained in-flight requests on SIGTERM)."""
    config = engine.config.server

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.start(wait=False)
        try:
            yield
        finally:  # bounded: a compile or a long generation still running must not hold the exit for ever
            try:
                await asyncio.wait_for(engine.close(), timeout=config.shutdown_grace)
            except asyncio.TimeoutError:
                log.warning("models still busy after --shutdown-grace (%gs): exiting without them", config.shutdown_grace)
                app.state.unfinished = True

    app = FastAPI(title="Squeezer", lifespan=lifespan, docs_url=None, redoc_url=None, **quiet_fastapi())
    install_docs(app)  # the pages with their scripts from this server, not a CDN
    app.state.engine = engine
    app.state.stopping = Stopping()  # the CLI's server calls its begin() when shutdown starts
    app.state.unfinished = False  # set when shutdown gave up waiting for the models (see the CLI)
    app.state.server_config = config
    app.state.api_keys = read_api_keys(config)
    app.state.metrics = metrics.Metrics(engine)
    install_error_handlers(app)
    app.add_middleware(Guard, config=config)  # outermost but for the access log: refused before routing
    app.add_middleware(AccessLog, log_format=config.log_format)
    for module in (admin, metrics, hf, openai, tei, tgi, chat):
        app.include_router(module.router)
    return app
