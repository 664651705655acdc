"""A schemathesis check for `tests/api/test_schema_fuzz.py`, loaded by the `st` process it starts (through
SCHEMATHESIS_HOOKS): every answer is JSON, and an error says what was wrong in `error`, but for the documented
non-JSON answers (an SSE stream from a streaming route, which must not end in an internal error, and the
Prometheus text of /metrics)."""

from __future__ import annotations

import json
from typing import Any

import schemathesis

from squeezer.api.errors import speaks_openai

# Non-JSON answers a route may give on success (the Inference API routes stream TGI's tokens for "stream": true).
NON_JSON = {"/generate_stream": "text/event-stream", "/v1/chat/completions": "text/event-stream",
            "/v1/completions": "text/event-stream", "/": "text/event-stream",
            "/models/{model_path}": "text/event-stream", "/metrics": "text/plain"}


@schemathesis.check
def json_or_event_stream(ctx, response, case) -> None:
    kind = (response.headers.get("content-type") or [""])[0].split(";")[0].strip()
    if response.status_code < 400 and NON_JSON.get(case.operation.path) == kind:
        if kind == "text/event-stream" and "internal error" in response.text:  # a 500 sent in-band, after the 200
            raise AssertionError(f"the stream ended in an internal error: {response.text[-300:]!r}")
        return
    if kind != "application/json":
        raise AssertionError(f"answered {response.status_code} as {kind or 'no content type'}, not JSON: {response.text[:300]!r}")
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise AssertionError(f"answered {response.status_code} with invalid JSON ({exc}): {response.text[:300]!r}") from None
    if response.status_code >= 400 and not isinstance(message(case.operation.path, body), str):
        raise AssertionError(f"an error ({response.status_code}) without an `error` message: {response.text[:300]!r}")


def message(path: str, body: Any) -> Any:
    """An error body's message: in OpenAI's error object on an OpenAI route, else the `error` string."""
    error = body.get("error") if isinstance(body, dict) else None
    if speaks_openai(path):
        return error.get("message") if isinstance(error, dict) and isinstance(error.get("type"), str) else None
    return error
