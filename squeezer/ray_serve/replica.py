"""One Ray Serve replica: an engine over its models behind the very app `squeezer serve` runs (`create_app`), so
routes, request and response shapes, errors and the API key are the same through Ray, and each replica batches the
requests Ray hands it with its own scheduler.

The class is plain Python; `squeezer.ray_serve.application` wraps it with `serve.ingress` and `serve.deployment`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from squeezer.api import create_app
from squeezer.config import ServeConfig
from squeezer.engine import Engine
from squeezer.sources import ModelSource


class LoadFailed(RuntimeError):
    """A replica's model did not load: Ray reports this (with its reasons) and keeps the replica out of rotation."""


def failures(engine: Engine) -> list[str]:
    """`id: why` for each model that failed to load."""
    return [f"{m['id']}: {m.get('error', 'failed')}" for m in engine.models() if m["state"] == "failed"]


REPLICA_HEADER = "x-squeezer-replica"


class ReplicaHeader:
    """Names the replica that answered in every response (`x-squeezer-replica`), so an operator (and the tests)
    can tell replicas apart behind Ray's proxy; the body is untouched."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        self.app, self.replica = app, replica.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (REPLICA_HEADER.encode(), self.replica)]
            await send(message)

        await self.app(scope, receive, named if scope["type"] == "http" else send)


def replica_id() -> str:
    """Ray Serve's id of the replica this runs in."""
    from ray import serve

    return str(serve.get_replica_context().replica_id.unique_id)


class SqueezerReplica:
    """The HTTP API over every model it is given; healthy once all have loaded, unhealthy while one has failed."""

    def __init__(self, sources: Sequence[ModelSource], config: ServeConfig) -> None:
        self.engine = Engine(list(sources), config)

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Ray calls this once the replica is constructed, then runs the app's lifespan, which starts the models;
        the lifespan is extended to wait for their loads, so a replica takes no request before its models are in."""
        app = create_app(self.engine)
        started = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
            async with started(app) as state:
                while self.engine.starting():
                    await asyncio.sleep(0.05)
                yield state

        app.router.lifespan_context = lifespan
        app.add_middleware(ReplicaHeader, replica=replica_id())
        return app

    async def check_health(self) -> None:
        """Ray's health check (the first one decides whether the replica starts at all): failing while a model has
        failed to load makes Ray report why and replace the replica instead of routing requests to it."""
        failed = failures(self.engine)
        if failed:
            raise LoadFailed("models failed to load: " + "; ".join(failed))
