"""Schema-based fuzzing (issue 13): schemathesis reads the live server's own `/openapi.json` and sends every
operation in it requests generated from the document, valid and invalid (path and query values, headers, media
types, methods the route lacks). Whatever it sends, the answer is never a 5xx, and it is JSON (an error names what
was wrong in `error`), but for an SSE stream from a streaming route and /metrics' Prometheus text (the check is
`schema_fuzz_checks.py`).

The routes read their bodies by hand (size limit, strict UTF-8, depth limit), and the document describes each
POST body (`squeezer/api/schemas.py`), so schemathesis sends bodies generated from it: valid ones, and in negative
mode wrong types, out-of-range values and missing fields. The first run takes the document as served, where the
model ids are free strings (so most requests name no served model); the second narrows every `model` field and
`/models/{model_path}` to the served ids, so the bodies reach the models. `tests/api/test_properties.py` fuzzes
the same bodies with free-form hypothesis strategies.

The server is this module's own (an encoder, a causal LM with a chat template and a seq2seq model, so every
dialect reaches a model), so no operation is excluded: whatever one changes, no other test shares the process.
schemathesis runs as its CLI (`st run`), deterministic (the same requests every run): the CLI runs every phase
(coverage included) and prints each failure with a curl line that reproduces it, while schemathesis' pytest
integration for a schema loaded from a fixture breaks on pytest 9.2 (it sets `Function._nodeid`).
`SQUEEZER_SCHEMA_EXAMPLES=500` hunts deeper by hand.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from squeezer.testing.server import ServerProcess

# Generated requests per operation in the fuzzing phase (the coverage phase adds its own, always the same).
EXAMPLES = int(os.environ.get("SQUEEZER_SCHEMA_EXAMPLES", "50"))
CHECKS = Path(__file__).with_name("schema_fuzz_checks.py")
MODELS = ["emb", "chat", "t2t"]

@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model, tiny_decoder_path, tiny_seq2seq_path):
    paths = [tiny_model("bert", "base"), tiny_decoder_path("llama"), tiny_seq2seq_path("t5")]
    # Small generation bounds keep every accepted generation request quick.
    proc = ServerProcess([*(f"{mid}={path}" for mid, path in zip(MODELS, paths)), "--max-new-tokens", "12",
                          "--default-new-tokens", "6"], tmp_path_factory.mktemp("schema-fuzz"))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return [(method, path) for path, item in document["paths"].items() for method in item if method in methods]


def with_model_ids(document: dict[str, Any]) -> dict[str, Any]:
    """The document, with the served model ids as the only values of `/models/{model_path}` and of every
    body's `model` field."""
    document = json.loads(json.dumps(document))
    for method, path in operations(document):
        operation = document["paths"][path][method]
        for media in operation.get("requestBody", {}).get("content", {}).values():
            if "model" in media["schema"].get("properties", {}):
                media["schema"]["properties"]["model"] = {"enum": MODELS}
        for parameter in operation.get("parameters", []):
            if (path, parameter["name"]) == ("/models/{model_path}", "model_path"):
                parameter["schema"] = {"enum": MODELS}
    return document


def run_schemathesis(server: ServerProcess, location: str, workdir: Path, operation_count: int) -> None:
    """`st run` over every operation of the document at `location`; fails with its report on any failed check."""
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", location, "--url", server.url,
           "--checks", "not_a_server_error,json_or_event_stream", "--max-examples", str(EXAMPLES),
           "--generation-deterministic", "--workers", "1", "--request-timeout", "60", "--no-color"]
    # Its own working folder: schemathesis keeps a cache folder where it runs.
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(CHECKS), "COLUMNS": "120"}
    done = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=900, check=False)
    report = done.stdout[-12000:] + done.stderr[-3000:]
    assert done.returncode == 0, f"{report}\n--- server log ---\n{server.logs()}"
    tested = re.search(r"Tested:\s+(\d+)", done.stdout)
    assert tested and int(tested.group(1)) == operation_count, f"not every operation was tested:\n{report}"
    assert server.proc.poll() is None and httpx.get(server.url + "/health").status_code == 200, server.logs()


def test_served_openapi_document(server, tmp_path) -> None:
    document = httpx.get(server.url + "/openapi.json").json()
    undocumented = [path for method, path in operations(document)
                    if method == "post" and "requestBody" not in document["paths"][path][method]]
    assert not undocumented, f"POST routes without a documented body: {undocumented}"
    run_schemathesis(server, server.url + "/openapi.json", tmp_path, len(operations(document)))


def test_served_openapi_document_with_the_served_model_ids(server, tmp_path) -> None:
    document = with_model_ids(httpx.get(server.url + "/openapi.json").json())
    (tmp_path / "openapi.json").write_text(json.dumps(document))
    run_schemathesis(server, str(tmp_path / "openapi.json"), tmp_path, len(operations(document)))
