"""API-key protection: a FastAPI dependency on every inference and admin route (never on /health)."""

from __future__ import annotations

import hmac

from fastapi import Request

from squeezer.errors import ClientError


async def require_api_key(request: Request) -> None:
    """With --api-key set, require `Authorization: Bearer KEY` (compared in constant time)."""
    expected = request.app.state.server_config.api_key
    if not expected:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise ClientError("missing or invalid API key: send `Authorization: Bearer <key>`", status=401)
