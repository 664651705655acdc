"""Squeezer on Ray Serve: the same HTTP API, in replicas spread over a Ray cluster (docs/scaling.md).

Nothing here imports Ray at import time: `require_ray` does, when a deployment is built, and says how to install
it (the extra `squeezer[ray]`) when it is missing, so a plain install keeps working without it.

    squeezer serve --ray MODEL ... --replicas 2           # the CLI (squeezer.ray_serve.runner)
    serve run examples/ray-serve.yaml                      # a config file: import_path squeezer.ray_serve:app_builder
"""

from __future__ import annotations

from typing import Any

from squeezer.ray_serve.install import INSTALL, require_ray


def app_builder(args: dict[str, Any]) -> Any:
    """Ray Serve's application builder (`import_path: squeezer.ray_serve:app_builder`); see `application`."""
    from squeezer.ray_serve.application import app_builder as build

    return build(args)


__all__ = ["INSTALL", "app_builder", "require_ray"]
