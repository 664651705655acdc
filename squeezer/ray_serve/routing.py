"""Which served model an HTTP request is for, read by the multiplexing router before any model replica sees it."""

from __future__ import annotations

import json

from squeezer.runtime.base import CHAT, EMBED, GENERATE, INFER, STREAM, TOKENIZE

# What a route without a model name asks for (Engine.resolve then takes the first model that can).
ROUTE_CAPABILITY = {"/": GENERATE, "/generate": GENERATE, "/generate_stream": STREAM, "/v1/completions": GENERATE,
                    "/v1/chat/completions": CHAT, "/embed": EMBED, "/v1/embeddings": EMBED, "/tokenize": TOKENIZE}
HOP_BY_HOP = {"content-length", "transfer-encoding", "connection"}


def model_for(path: str, body: bytes, capabilities: dict[str, frozenset[str]]) -> str:
    """The served model a request is for; the first one when it names none that is served (that replica then
    answers the 404 or the route's own reply, as the single process does)."""
    from squeezer.api.hf import split_model_path

    known = set(capabilities)
    if path.startswith("/models/"):
        model_id = split_model_path(path.removeprefix("/models/"), known)[0]
        if model_id in known:
            return model_id
    try:
        named = json.loads(body).get("model") if body.startswith(b"{") else None
    except (ValueError, UnicodeDecodeError):
        named = None
    if isinstance(named, str) and named in known:
        return named
    wanted = ROUTE_CAPABILITY.get(path)
    able = [m for m, caps in capabilities.items() if wanted in caps or (path == "/" and INFER in caps)]
    return (able or list(capabilities))[0]
