"""Ray, imported when a deployment is built, never at import time; its absence names the extra to install."""

from __future__ import annotations

from types import ModuleType

from squeezer.config import ConfigError

INSTALL = "serving on Ray needs Ray Serve: pip install 'squeezer[ray]'"


def require_ray() -> tuple[ModuleType, ModuleType]:
    """The `ray` and `ray.serve` modules, or a ConfigError saying how to install them."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise ConfigError(f"{INSTALL} ({exc})") from None
    return ray, serve
