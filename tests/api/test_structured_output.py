"""Structured output over HTTP (issue 15, first slice): OpenAI's `response_format` (the openai client's `parse`
with a pydantic model included) and TGI's `grammar` (through huggingface_hub), streamed and whole, on a tiny
random decoder, whose answers would be anything without the grammar."""

from __future__ import annotations

import json
import re
from typing import Literal

import httpx
import pytest
from huggingface_hub import InferenceClient
from openai import OpenAI
from pydantic import BaseModel

from squeezer.testing.server import ServerProcess
from tests.api.test_decoder_artifact_serving import artifact  # noqa: F401 (a fixture: the compiled tiny llama)
from tests.helpers import error_message

CHAT = [{"role": "user", "content": "Is the sky blue? Answer in JSON."}]


class Verdict(BaseModel):
    answer: Literal["yes", "no", "maybe"]
    sure: bool


@pytest.fixture(scope="module")
def server(tiny_decoder_path, tmp_path_factory):
    srv = ServerProcess([f"llm={tiny_decoder_path('llama')}"], tmp_path_factory.mktemp("structured"))
    srv.wait_ready()
    yield srv
    srv.stop()


def test_openai_parse_returns_the_pydantic_model(server) -> None:
    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    for temperature in (0, 1.0):
        parsed = client.beta.chat.completions.parse(model="llm", messages=CHAT, response_format=Verdict,
                                                    temperature=temperature, seed=3, max_tokens=60)
        choice = parsed.choices[0]
        assert isinstance(choice.message.parsed, Verdict), choice.message.content
        assert choice.finish_reason == "stop"


def test_json_object_streamed_and_whole(server) -> None:
    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    whole = client.chat.completions.create(model="llm", messages=CHAT, response_format={"type": "json_object"},
                                           temperature=0, max_tokens=200)
    chunks = client.chat.completions.create(model="llm", messages=CHAT, response_format={"type": "json_object"},
                                            temperature=0, max_tokens=200, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    if whole.choices[0].finish_reason == "stop":  # an open-ended object may also run to max_tokens
        assert isinstance(json.loads(streamed), dict)


def test_tgi_grammar_through_huggingface_hub(server) -> None:
    client = InferenceClient(model=server.url)
    schema = {**Verdict.model_json_schema(), "additionalProperties": False}  # closed, as the model has no other keys
    text = client.text_generation("Is the sky blue?", max_new_tokens=60, grammar={"type": "json", "value": schema})
    Verdict.model_validate_json(text)
    regex = client.text_generation("Pick:", max_new_tokens=10, grammar={"type": "regex", "value": "(red|green|blue)!"})
    assert re.fullmatch("(red|green|blue)!", regex), regex


@pytest.mark.parametrize("body, message", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "json_schema"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/missing"}}}}, "response_format: cannot compile it"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}}}},
     "response_format: no text satisfies it"),
])
def test_a_bad_response_format_is_a_422(server, body, message) -> None:
    response = httpx.post(server.url + "/v1/chat/completions", json={"model": "llm", "messages": CHAT, **body})
    assert response.status_code == 422 and message in error_message(response), response.text


def test_a_compiled_decoder_with_its_prefix_cache_follows_the_grammar(artifact, tmp_path) -> None:  # noqa: F811
    """The ONNX Runtime decoder (no torch on the greedy path) and its prefix cache: the second, identical request
    resumes from the first one's cached prompt and still answers inside the grammar."""
    srv = ServerProcess([f"m={artifact}"], tmp_path)
    client = OpenAI(base_url=srv.url + "/v1", api_key="unused")
    try:
        srv.wait_ready()
        answers = [client.beta.chat.completions.parse(model="m", messages=CHAT, response_format=Verdict, temperature=0,
                                                      max_tokens=60) for _ in range(2)]
    finally:
        srv.stop()
    assert all(isinstance(a.choices[0].message.parsed, Verdict) for a in answers)
    assert answers[1].usage.prompt_tokens_details.cached_tokens > 0
    assert answers[0].choices[0].message.content == answers[1].choices[0].message.content


@pytest.mark.slow
def test_smollm2_answers_a_pydantic_model_and_calls_a_tool(smollm2_file, tmp_path) -> None:
    """The real model: parse() into a pydantic model, and a required tool call with valid arguments."""
    folder, name = smollm2_file
    srv = ServerProcess([f"smol={folder / name}"], tmp_path)
    client = OpenAI(base_url=srv.url + "/v1", api_key="unused")
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 40}}, "required": ["city"]}}}
    try:
        srv.wait_ready(600)
        parsed = client.beta.chat.completions.parse(model="smol", messages=CHAT, response_format=Verdict,
                                                    temperature=0, max_tokens=40)
        called = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Weather in Paris?"}],
                                                tools=[weather], tool_choice="required", temperature=0, max_tokens=60)
    finally:
        srv.stop()
    assert isinstance(parsed.choices[0].message.parsed, Verdict)
    call = called.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments)["city"], str)
