"""API keys: a FastAPI dependency on every inference and admin route (never on /health or /metrics), the admin
key that load and unload need when one is set, and the tenant each key stands for.

Each API key is a tenant. Caches that could tell one client about another's requests (the result cache and its
`x-squeezer-cache` header, the token cache and its timing header, the prefix cache and `cached_tokens`) are
scoped by tenant, so a key only ever hits entries made with the same key. Without keys every client is the
same tenant: anyone who can reach the server can already send anything.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from squeezer.errors import ClientError


def _bearer(request: Request) -> bytes | None:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return given.strip().encode() if scheme.lower() == "bearer" else None


def _matching(given: bytes | None, keys: tuple[str, ...]) -> str | None:
    """The key `given` equals, compared in constant time with every key (no early exit to time)."""
    found = None
    for key in keys:
        if given is not None and hmac.compare_digest(given, key.encode()):
            found = key
    return found


def tenant_id(key: str) -> str:
    """A stable name for a key's tenant that does not reveal the key (cache keys and scopes hold it)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


async def require_api_key(request: Request) -> None:
    """With API keys configured, require `Authorization: Bearer KEY` (the admin key, which may do more, does
    too) and remember the key's tenant for `tenant_of`."""
    keys, admin = request.app.state.api_keys, request.app.state.server_config.admin_key
    if not keys:
        return
    key = _matching(_bearer(request), (*keys, *((admin,) if admin else ())))
    if key is None:
        raise ClientError("missing or invalid API key: send `Authorization: Bearer <key>`", status=401)
    request.state.tenant = tenant_id(key)


def tenant_of(request: Request) -> str:
    """The requesting tenant: its key's `tenant_id`, or "" when the server needs no key."""
    return getattr(request.state, "tenant", "")


def require_admin_key(request: Request) -> None:
    """With --admin-key set, loading and unloading models need it (the API key alone does not do)."""
    expected = request.app.state.server_config.admin_key
    if expected and _matching(_bearer(request), (expected,)) is None:
        raise ClientError("loading and unloading models needs the admin key: send `Authorization: Bearer <admin key>`",
                          status=403)


def scope_of(request: Request, salt: object = None) -> str:
    """The cache scope of a request: its tenant, narrowed by a `cache_salt` (vLLM's field) when the client gives
    one, so even clients sharing a key (or a keyless server) can keep their prompts out of each other's hits."""
    if salt is None:
        return tenant_of(request)
    if not isinstance(salt, str) or not 1 <= len(salt) <= 256:
        raise ClientError("cache_salt: expected a string of 1 to 256 characters", status=422)
    return f"{tenant_of(request)}/{salt}"
