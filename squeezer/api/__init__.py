"""HTTP layer: routes and wire formats over the engine."""

from squeezer.api.app import create_app

__all__ = ["create_app"]
