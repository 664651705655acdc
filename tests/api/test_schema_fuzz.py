"""Schema-based fuzzing (issue 13): schemathesis reads the live server's own `/openapi.json` and sends every
operation in it requests generated from the document, valid and invalid (path and query values, headers, media
types, methods the route lacks). Whatever it sends, the answer is never a 5xx, and it is JSON (an error names what
was wrong in `error`), but for an SSE stream from a streaming route and /metrics' Prometheus text (the check is
`schema_fuzz_checks.py`).

The routes read their bodies by hand (size limit, strict UTF-8, depth limit), so the document describes no request
body and schemathesis alone would send none. The second run fills in a body schema for each POST operation the
document leaves without one (`BODIES`, a sketch of each dialect's wire format with small valid values; negative
mode sends wrong types, out-of-range values and missing fields), and the served model ids for
`/models/{model_path}`; a body the server documents itself is used as served. `tests/api/test_properties.py`
fuzzes the same bodies with free-form hypothesis strategies.

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

# Valid requests stay small (negative mode steps outside every bound: huge, negative, wrong types).
_NUM, _INT = {"type": "number", "minimum": 0, "maximum": 2}, {"type": "integer", "minimum": 1, "maximum": 8}
_BOOL, _STR = {"type": "boolean"}, {"type": "string", "maxLength": 40}
_PROMPT = {"type": "string", "minLength": 1, "maxLength": 40}  # the generation routes take one non-empty prompt
_TEXTS = {"anyOf": [_STR, {"type": "array", "items": _STR, "maxItems": 4}]}
_MODEL = {"enum": MODELS}
_PARAMETERS = {"type": "object", "properties": {name: kind for names, kind in [
    (["max_new_tokens", "min_new_tokens", "top_k", "seed", "truncate", "top_n_tokens", "num_return_sequences",
      "num_beams", "best_of"], _INT),
    (["temperature", "top_p", "typical_p", "repetition_penalty", "frequency_penalty"], _NUM),
    (["do_sample", "details", "return_full_text", "decoder_input_details", "watermark", "normalize", "multi_label"], _BOOL),
    (["function_to_apply", "aggregation_strategy", "hypothesis_template"], _STR),
    (["stop", "candidate_labels", "targets"], _TEXTS),
    (["grammar", "logit_bias"], {"type": "object"}),
] for name in names}}
_OPENAI = {"max_tokens": _INT, "max_completion_tokens": _INT, "temperature": _NUM, "top_p": _NUM, "n": _INT,
           "stream": _BOOL, "stream_options": {"type": "object", "properties": {"include_usage": _BOOL}}, "stop": _TEXTS,
           "seed": _INT, "frequency_penalty": _NUM, "presence_penalty": _NUM,
           "logit_bias": {"type": "object", "additionalProperties": _NUM}, "user": _STR}
_MESSAGE = {"type": "object", "required": ["role", "content"], "properties": {
    "role": {"enum": ["system", "user", "assistant"]},
    "content": {"anyOf": [_STR, {"type": "array", "maxItems": 3, "items": {
        "type": "object", "required": ["type", "text"], "properties": {"type": {"enum": ["text"]}, "text": _STR}}}]},
    "name": _STR}}
_HF = {"type": "object", "required": ["inputs"], "properties": {
    "inputs": {"anyOf": [_STR, {"type": "array", "items": _STR, "maxItems": 3}, {"type": "object"}]},
    "parameters": _PARAMETERS, "options": {"type": "object"}}}
_TEI = {"type": "object", "required": ["inputs"], "properties": {
    "inputs": _TEXTS, "normalize": _BOOL, "truncate": _BOOL, "truncation_direction": _STR, "prompt_name": _STR,
    "add_special_tokens": _BOOL, "return_offsets": _BOOL, "model": _MODEL}}
_TGI = {"type": "object", "required": ["inputs"], "properties": {"inputs": _PROMPT, "parameters": _PARAMETERS, "stream": _BOOL}}
BODIES: dict[str, dict[str, Any]] = {
    "/": _HF,
    "/models/{model_path}": _HF,
    "/embed": _TEI,
    "/tokenize": _TEI,
    "/generate": _TGI,
    "/generate_stream": _TGI,
    "/v1/embeddings": {"type": "object", "required": ["input"], "properties": {
        "model": _MODEL, "input": {"anyOf": [_STR, {"type": "array", "items": _STR}, {"type": "array", "items": _INT}]},
        "encoding_format": {"enum": ["float", "base64"]}, "dimensions": _INT, "user": _STR}},
    "/v1/chat/completions": {"type": "object", "required": ["model", "messages"], "properties": {
        "model": _MODEL, "messages": {"type": "array", "items": _MESSAGE, "minItems": 1, "maxItems": 4}, "logprobs": _BOOL,
        "top_logprobs": _INT, "response_format": {"type": "object"}, "tools": {"type": "array", "items": {"type": "object"}},
        "tool_choice": {"anyOf": [_STR, {"type": "object"}]}, **_OPENAI}},
    "/v1/completions": {"type": "object", "required": ["model", "prompt"], "properties": {
        "model": _MODEL, "prompt": _PROMPT,
        "echo": _BOOL, "logprobs": _INT, "suffix": _STR, "best_of": _INT, **_OPENAI}},
}


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


def with_bodies(document: dict[str, Any]) -> dict[str, Any]:
    """The document, with a body schema for each POST operation that has none, and the model ids as the values
    of `/models/{model_path}`."""
    document = json.loads(json.dumps(document))
    for method, path in operations(document):
        operation = document["paths"][path][method]
        if method == "post" and "requestBody" not in operation:
            assert path in BODIES, f"POST {path} documents no body: describe it in the server or in BODIES here"
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": BODIES[path]}}}
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
    run_schemathesis(server, server.url + "/openapi.json", tmp_path, len(operations(document)))


def test_served_openapi_document_with_request_bodies(server, tmp_path) -> None:
    document = with_bodies(httpx.get(server.url + "/openapi.json").json())
    (tmp_path / "openapi.json").write_text(json.dumps(document))
    run_schemathesis(server, str(tmp_path / "openapi.json"), tmp_path, len(operations(document)))
