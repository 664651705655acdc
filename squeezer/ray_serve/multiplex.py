"""Many models over replicas with Ray Serve's model multiplexing (`--models-per-replica K`).

A light router deployment takes every HTTP request, finds the model it is for (the `/models/ID` path, the body's
`"model"`, else the first served model that can do what the route asks, as `Engine.resolve` would), and hands it
to a model replica with `multiplexed_model_id=ID`: Ray routes it to a replica that already holds that model, and
only otherwise to one that loads it (evicting its least recently used past K). Each model replica runs the same
app as `squeezer serve` over one engine that knows every model but loads only those sent to it, so answers,
errors and the API key are the single process's; its response comes back part by part, so streams stream.

The two deployments are defined once Ray is imported (`serve.multiplexed` and `serve.deployment` decorate them);
the router's choice of model is `squeezer.ray_serve.routing`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from squeezer.config import ServeConfig
from squeezer.ray_serve.asgi import asgi_parts
from squeezer.ray_serve.install import require_ray
from squeezer.sources import ModelSource


def model_deployment(models_per_replica: int) -> Any:
    """Replicas holding at most `models_per_replica` models each, answering forwarded HTTP requests."""
    _, serve = require_ray()
    from squeezer.api import create_app
    from squeezer.engine import Engine
    from squeezer.ray_serve.replica import REPLICA_HEADER, replica_id
    from squeezer.registry import ModelRegistry

    class Held:
        """One model this replica holds; Ray's multiplexing calls `__del__` when it evicts it."""

        def __init__(self, engine: Engine, model_id: str) -> None:
            self.engine, self.model_id = engine, model_id

        async def __del__(self) -> None:
            await self.engine.unload(self.model_id)

    @serve.deployment
    class SqueezerModels:
        def __init__(self, sources: Sequence[ModelSource], config: ServeConfig) -> None:
            self.engine = Engine(list(sources), config)
            self.app = create_app(self.engine)  # its lifespan never runs: it would load every model
            self.engine.registry = ModelRegistry(list(sources), config, self.engine.hooks)  # known, none loaded
            self.replica = replica_id()

        @serve.multiplexed(max_num_models_per_replica=models_per_replica)
        async def hold(self, model_id: str) -> Held:
            described = await self.engine.load(model_id)
            if described["state"] != "ready":
                raise RuntimeError(f"model {model_id} failed to load: {described.get('error')}")
            return Held(self.engine, model_id)

        async def forward(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> AsyncIterator[Any]:
            """One HTTP request through this replica's app, for the model Ray routed it here for: first (status,
            headers), then the body as the app sends it, so a stream streams (Ray calls this a streaming method)."""
            await self.hold(serve.get_multiplexed_model_id())
            async for part in asgi_parts(self.app, method, target, headers, body):
                if isinstance(part, tuple):
                    status, answer_headers = part
                    yield status, [*answer_headers, (REPLICA_HEADER, self.replica)]
                else:
                    yield part

    return SqueezerModels


def router_deployment() -> Any:
    """The HTTP ingress: reads the request, picks its model, forwards it to a replica holding that model."""
    _, serve = require_ray()
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse

    from squeezer.ray_serve.routing import HOP_BY_HOP, model_for

    @serve.deployment
    class SqueezerRouter:
        def __init__(self, models: Any, capabilities: dict[str, frozenset[str]]) -> None:
            self.models, self.capabilities = models, capabilities

        async def __call__(self, request: Request) -> Response:
            body = await request.body()
            path, query = request.url.path, request.url.query
            if path == "/health" and "model" not in request.query_params:  # models load on demand: up is healthy
                return JSONResponse({"status": "ok", "models": dict.fromkeys(self.capabilities, "multiplexed")})
            model_id = model_for(path, body, self.capabilities)
            headers = [(k, v) for k, v in request.headers.items() if k not in HOP_BY_HOP]
            parts = self.models.options(multiplexed_model_id=model_id, stream=True).forward.remote(
                request.method, path + (f"?{query}" if query else ""), headers, body)
            status, answer_headers = await parts.__anext__()
            response = StreamingResponse(parts, status_code=status)
            response.raw_headers = [(k.encode(), v.encode()) for k, v in answer_headers if k.lower() not in HOP_BY_HOP]
            return response

    return SqueezerRouter
