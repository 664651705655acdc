"""Reading request bodies: a size limit enforced while streaming, strict UTF-8, JSON or raw text."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from fastapi import Request
from starlette.requests import ClientDisconnect

from squeezer.errors import ClientError

# How deeply a request body may nest: every request shape here needs three or four levels.
MAX_JSON_DEPTH = 32


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes `limit` bytes (before reading it all)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ClientError(f"payload of {declared} bytes exceeds the limit of {limit} bytes", status=413)
    chunks, size = [], 0
    wait = request.app.state.server_config.read_timeout or None
    try:
        async with asyncio.timeout(wait):  # a body sent a byte at a time must not hold its connection for ever
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ClientError(f"payload exceeds the limit of {limit} bytes", status=413)
                chunks.append(chunk)
    except ClientDisconnect:  # gone before its body arrived: counted as the other disconnects are, not a 500
        raise ClientError("client disconnected", status=499) from None
    except TimeoutError:
        raise ClientError(f"request body not received within {wait:g}s (--read-timeout)", status=408) from None
    return b"".join(chunks)


def decode_text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClientError(f"body is not valid UTF-8 (byte {exc.start})", status=400) from None


def parse_json_or_text(request: Request, body: bytes) -> Any:
    """JSON when declared (or when it looks like JSON, as curl -d sends it as a form); else raw text."""
    if not body.strip():
        raise ClientError("request body is empty; send {\"inputs\": ...}", status=400)
    text = decode_text(body)
    declared_json = "json" in request.headers.get("content-type", "")
    if declared_json or text.lstrip()[:1] in {"{", "[", '"'}:
        try:
            return load_json(text)
        except ClientError:
            if declared_json:
                raise
    return text



def load_json(text: str) -> Any:
    """Parse a JSON body; invalid JSON, or JSON nested deeper than `MAX_JSON_DEPTH`, is a 400."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClientError(f"body is not valid JSON: {exc.msg} at position {exc.pos}", status=400) from None
    except RecursionError:  # the parser's own bound, far below the payload limit's reach
        raise ClientError(f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels", status=400) from None
    check_depth(value)
    if _ESCAPED_SURROGATE.search(text):
        check_unicode(value)
    return value


# A JSON string may escape half of a surrogate pair ("\ud800"), which the parser turns into a string no encoder
# takes (a tokenizer fails on it); a whole pair becomes one character. Only a body with such an escape is walked.
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def check_unicode(value: Any) -> None:
    """Refuse a body whose strings (keys included) hold a lone surrogate, as invalid UTF-8 is refused."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ClientError(f"body: a string holds a lone surrogate ({item[exc.start]!r}); send valid Unicode",
                                  status=400) from None


def check_depth(value: Any) -> None:
    """Refuse JSON nested deeper than `MAX_JSON_DEPTH`, walking it without recursion: everything downstream
    (limits, cache keys, tasks) may then recurse over a request safely."""
    level = [value]
    for _ in range(MAX_JSON_DEPTH):
        level = [child for item in level if isinstance(item, (dict, list))
                 for child in (item.values() if isinstance(item, dict) else item) if isinstance(child, (dict, list))]
        if not level:
            return
    raise ClientError(f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels", status=400)


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """A JSON object body, for the OpenAI- and TEI-style routes, which take nothing else."""
    text = decode_text(await read_body(request, limit))
    if not text.strip():
        raise ClientError("request body is empty", status=400)
    payload = load_json(text)
    if not isinstance(payload, dict):
        raise ClientError(f"body: expected a JSON object, got {type(payload).__name__}", status=422)
    return payload


def waits_for_model(request: Request) -> bool:
    """Whether the request asks to wait while its model loads (or reloads after an eviction) instead of the 503
    that says it is loading: the Inference API's `x-wait-for-model` header, honoured on every route, since
    OpenAI, TGI and TEI clients have no body option for it."""
    return request.headers.get("x-wait-for-model", "").lower() in {"1", "true", "yes"}


def model_name(body: dict[str, Any]) -> str | None:
    """The model a body names (`model`), or None to let the engine choose (`Engine.resolve`)."""
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ClientError("model: expected a string", status=422)
    return model or None
