"""The request bodies of every POST route, as JSON Schemas for the OpenAPI document (`/openapi.json`, `/docs`).

The routes read their bodies by hand (a size limit while streaming, strict UTF-8, a depth limit: `api/body.py`),
so FastAPI cannot infer these. Each dialect is described as its anchor documents it (the Inference API, TEI, TGI,
OpenAI), with the fields this server reads. Parameters are derived from the same dataclasses that validate them
(`tasks.base.params_schema`), so their names, types, choices and rules cannot drift from what is accepted; the
shapes around them are data here. Documentation, not validation: the handlers stay the one place that decides,
and answer what they refuse with a 4xx that names the field.
"""

from __future__ import annotations

from typing import Any

from squeezer.generation.chat import CHAT_ROLES
from squeezer.generation.params import GenerationParams
from squeezer.tasks import TASKS
from squeezer.tasks.base import params_schema
from squeezer.tasks.seq2seq import SEQ2SEQ_TASKS, Seq2SeqParams

_TEXT = {"type": "string", "minLength": 1}
_TEXTS = {"anyOf": [_TEXT, {"type": "array", "items": _TEXT, "minItems": 1}]}
_BOOL, _STRING, _OBJECT = {"type": "boolean"}, {"type": "string"}, {"type": "object"}
_MODEL = {"type": "string", "description": "a served model id (GET /v1/models); omitted: the first that can answer"}
_PAIR = {"type": "object", "required": ["text"], "properties": {"text": _TEXT, "text_pair": _TEXT}}
_QUESTION = {"type": "object", "required": ["question", "context"], "properties": {"question": _TEXT, "context": _TEXT}}


def _one_or_list(item: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [item, {"type": "array", "items": item, "minItems": 1}]}


# What each task's `inputs` is; the rest of the Inference API body is the same for every task.
TASK_INPUTS: dict[str, dict[str, Any]] = {
    "feature-extraction": _TEXTS,
    "sentence-similarity": {"type": "object", "required": ["source_sentence", "sentences"], "properties": {
        "source_sentence": _TEXT, "sentences": {"type": "array", "items": _TEXT, "minItems": 1}}},
    "text-classification": _one_or_list({"anyOf": [_TEXT, _PAIR]}),
    "zero-shot-classification": _TEXTS,
    "fill-mask": _TEXTS,
    "token-classification": _TEXTS,
    "question-answering": _one_or_list(_QUESTION),
}
_OPTIONS = {"type": "object", "properties": {
    "wait_for_model": {**_BOOL, "default": False, "description": "wait while the model loads instead of a 503"},
    "use_cache": {**_BOOL, "default": True, "description": "answer a repeated request from the result cache"}}}


def _inference(task: str, inputs: dict[str, Any], params: type, stream: bool = False) -> dict[str, Any]:
    properties = {"inputs": inputs, "parameters": params_schema(params), "options": _OPTIONS}
    if stream:
        properties["stream"] = {**_BOOL, "description": "TGI's token stream (server-sent events)"}
    return {"title": task, "type": "object", "required": ["inputs"], "properties": properties}


def inference_api() -> dict[str, Any]:
    """`POST /models/{id}` (and `/`): one body per task, the model's task chosen by the server."""
    bodies = [_inference(name, TASK_INPUTS[name], task.params_type) for name, task in TASKS.items()]
    bodies.append(_inference("text-generation", _one_or_list(_TEXT), GenerationParams, stream=True))
    bodies += [_inference(name, _TEXTS, Seq2SeqParams, stream=True) for name in SEQ2SEQ_TASKS]
    return {"anyOf": [*bodies, {**_TEXTS, "title": "bare inputs"}]}


def tei_embed() -> dict[str, Any]:
    return {"type": "object", "required": ["inputs"], "properties": {
        "inputs": _TEXTS, "model": _MODEL, "normalize": {**_BOOL, "default": True},
        "truncate": {**_BOOL, "default": False}}}


def tei_tokenize() -> dict[str, Any]:
    return {"type": "object", "required": ["inputs"], "properties": {
        "inputs": _TEXTS, "model": _MODEL, "add_special_tokens": {
            **_BOOL, "description": "default: as the model's requests are tokenized (an encoder adds them, a "
                                    "generation prompt not)"}}}


def tgi_generate() -> dict[str, Any]:
    return {"type": "object", "required": ["inputs"], "properties": {
        "inputs": _TEXT, "parameters": params_schema(GenerationParams), "model": _MODEL}}


def openai_embeddings() -> dict[str, Any]:
    return {"type": "object", "required": ["input"], "properties": {
        "model": _MODEL, "input": _TEXTS, "encoding_format": {"enum": ["float", "base64"], "default": "float"},
        "dimensions": {"type": "integer", "minimum": 1, "description": "cut and re-normalized to this many"},
        "user": _STRING}}


def _openai_sampling() -> dict[str, Any]:
    """The OpenAI fields that map onto generation parameters (`api/chat.py`), typed as those parameters are."""
    generation = params_schema(GenerationParams)["properties"]
    fields = {name: generation[name] for name in ("temperature", "top_p", "seed", "stop", "frequency_penalty",
                                                  "presence_penalty", "logit_bias")}
    fields["temperature"] = {**fields["temperature"], "default": 1.0}
    count = generation["max_new_tokens"]
    return {**fields, "max_tokens": count, "max_completion_tokens": count, "n": generation["num_return_sequences"],
            "stream": {**_BOOL, "default": False},
            "stream_options": {"type": "object", "properties": {"include_usage": _BOOL}},
            "cache_salt": {"type": "string", "minLength": 1, "maxLength": 256,
                           "description": "narrows prefix-cache sharing to requests with the same salt (vLLM's field)"},
            "user": _STRING}


_PARTS = {"type": "array", "items": {"type": "object", "required": ["type", "text"], "properties": {
    "type": {"enum": ["text"]}, "text": _STRING}}}
_MESSAGE = {"type": "object", "required": ["role"], "properties": {
    "role": {"enum": list(CHAT_ROLES)}, "content": {"anyOf": [_STRING, _PARTS]},
    "tool_calls": {"type": "array", "items": _OBJECT}, "tool_call_id": _STRING}}
_TOOL = {"type": "object", "required": ["type", "function"], "properties": {
    "type": {"enum": ["function"]}, "function": {"type": "object", "required": ["name"], "properties": {
        "name": _TEXT, "description": _STRING, "parameters": {**_OBJECT, "description": "a JSON Schema"}}}}}


def openai_chat() -> dict[str, Any]:
    return {"type": "object", "required": ["messages"], "properties": {
        "model": _MODEL, "messages": {"type": "array", "items": _MESSAGE, "minItems": 1}, **_openai_sampling(),
        "logprobs": {**_BOOL, "default": False},
        "top_logprobs": params_schema(GenerationParams)["properties"]["top_n_tokens"],
        "response_format": {"type": "object", "required": ["type"], "properties": {
            "type": {"enum": ["text", "json_object", "json_schema"]}, "json_schema": _OBJECT}},
        "tools": {"type": "array", "items": _TOOL, "maxItems": 128},
        "tool_choice": {"anyOf": [{"enum": ["none", "auto", "required"]}, _OBJECT], "default": "auto"},
        "parallel_tool_calls": {**_BOOL, "default": True}}}


def openai_completions() -> dict[str, Any]:
    return {"type": "object", "required": ["prompt"], "properties": {
        "model": _MODEL, "prompt": _TEXT, **_openai_sampling(), "echo": {**_BOOL, "default": False},
        "logprobs": {**params_schema(GenerationParams)["properties"]["top_n_tokens"],
                     "description": "report the log-probabilities of this many alternatives per token"}}}


def request_body(schema: dict[str, Any], text: bool = False) -> dict[str, Any]:
    """A route's `openapi_extra`: its JSON body (and, for the Inference API, a bare text body)."""
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if text:
        content["text/plain"] = {"schema": _TEXT}
    return {"requestBody": {"required": True, "content": content}}
