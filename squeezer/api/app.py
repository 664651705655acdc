"""The app factory: an ASGI app around one engine. Server state lives on `app.state`, never in globals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from squeezer.api import admin, hf
from squeezer.api.errors import install_error_handlers
from squeezer.config import ServerConfig
from squeezer.engine import Engine


def create_app(engine: Engine, server_config: ServerConfig | None = None) -> FastAPI:
    """Build the HTTP app; models start loading when the app starts and are freed when it stops."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await engine.start(wait=False)
        try:
            yield
        finally:
            await engine.close()

    app = FastAPI(title="Squeezer", lifespan=lifespan)
    app.state.engine = engine
    app.state.server_config = server_config or ServerConfig()
    install_error_handlers(app)
    app.include_router(admin.router)
    app.include_router(hf.router)
    return app
