"""API keys: a FastAPI dependency on every inference and admin route (never on /health or /metrics), and the
admin key that load and unload need when one is set."""

from __future__ import annotations

import hmac

from fastapi import Request

from squeezer.errors import ClientError


def _bearer_matches(request: Request, expected: str) -> bool:
    """Whether `Authorization: Bearer KEY` carries `expected` (compared in constant time)."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


async def require_api_key(request: Request) -> None:
    """With an API key configured, require `Authorization: Bearer KEY` (the admin key, which may do more,
    does too)."""
    expected, admin = request.app.state.api_key, request.app.state.server_config.admin_key
    if expected and not (_bearer_matches(request, expected) or (admin and _bearer_matches(request, admin))):
        raise ClientError("missing or invalid API key: send `Authorization: Bearer <key>`", status=401)


def require_admin_key(request: Request) -> None:
    """With --admin-key set, loading and unloading models need it (the API key alone does not do)."""
    expected = request.app.state.server_config.admin_key
    if expected and not _bearer_matches(request, expected):
        raise ClientError("loading and unloading models needs the admin key: send `Authorization: Bearer <admin key>`",
                          status=403)
