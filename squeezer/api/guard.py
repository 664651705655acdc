"""Who may reach the server at all, before any route runs: the Host a request names and the page it comes from.

A server on 127.0.0.1 with no API key is still reachable by any web page its user opens: the page can POST to
it directly (a browser sends the request, only the answer is hidden from the page), or make a name it
controls resolve to 127.0.0.1 (DNS rebinding) and read the answers too. Browsers always say which page asks
(`Origin`) and which name they meant (`Host`), so a request from an origin not allowed by `--cors-origins`, or
for a host not allowed by `--allowed-hosts`, gets 403 here. Clients that are not browsers send no `Origin`.
"""

from __future__ import annotations

import ipaddress

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from squeezer.api.errors import error_body
from squeezer.config import ServerConfig

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_names(value: str) -> frozenset[str]:
    return frozenset(name.strip().lower() for name in value.split(",") if name.strip())


def host_name(header: str) -> str:
    """The name in a Host header, without its port (`[::1]:8000` -> `::1`)."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


class Guard:
    """Refuses requests for foreign hosts or from foreign origins (403), before routing."""

    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        hosts = split_names(config.allowed_hosts)
        self.hosts = hosts or (LOOPBACK_NAMES | {config.host.lower()} if is_loopback(config.host) else frozenset({"*"}))
        self.origins = split_names(config.cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = self.problem(Headers(scope=scope))
            if problem:
                await JSONResponse(error_body(scope["path"], 403, problem), status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def problem(self, headers: Headers) -> str | None:
        host = host_name(headers.get("host", "").lower())
        if "*" not in self.hosts and host not in self.hosts:
            return f"host {host!r} is not served here (--allowed-hosts)"
        origin = headers.get("origin")
        if origin is not None and "*" not in self.origins and origin.lower() not in self.origins:
            return f"requests from the web page at {origin!r} are not allowed (--cors-origins)"
        return None
