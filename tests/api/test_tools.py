"""Tool calling on the chat route (issue 15): `required` and named choices are calls by construction (a grammar
over the functions' schemas), answered as OpenAI's `tool_calls`, whole and streamed; a conversation continues
with the call and its result; bad tool requests are 422s. On a tiny random decoder, so only the grammar makes the
answer a call."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
from huggingface_hub import InferenceClient
from openai import OpenAI

from squeezer.api.tools import ToolPlan, tool_plan
from squeezer.testing.server import ServerProcess

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Oslo"]}, "celsius": {"type": "boolean"}},
                   "required": ["city", "celsius"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}},
                                       "required": ["zone"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server(tiny_decoder_path, tmp_path_factory):
    """The tiny llama with a 2048-token context (rotary positions need no new weights): its byte-sized tokens
    make the tool prompt longer than its usual 256."""
    folder = tmp_path_factory.mktemp("tools") / "llama"
    shutil.copytree(tiny_decoder_path("llama"), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 2048}))
    srv = ServerProcess([f"llm={folder}"], folder.parent)
    srv.wait_ready()
    yield srv
    srv.stop()


def weather_args(call) -> dict:
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    assert args["city"] in ("Paris", "Oslo") and isinstance(args["celsius"], bool) and set(args) == {"city", "celsius"}
    return args


def test_required_and_named_choices_are_calls(server) -> None:
    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        for temperature, parallel in ((0, False), (1.0, False), (0, True), (1.0, True)):
            done = client.chat.completions.create(model="llm", messages=ASK, tools=[WEATHER, TIME], tool_choice=choice,
                                                  temperature=temperature, seed=5, max_tokens=160,
                                                  parallel_tool_calls=parallel)
            message = done.choices[0].message
            assert message.content is None and done.choices[0].finish_reason == "tool_calls"
            assert 1 <= len(message.tool_calls) <= (8 if parallel else 1)
            for call in message.tool_calls:
                if choice == "required" and call.function.name == "get_time":
                    assert json.loads(call.function.arguments)["zone"] in ("UTC", "CET")
                else:
                    weather_args(call)


def test_a_streamed_call_and_the_conversation_after_it(server) -> None:
    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    chunks = list(client.chat.completions.create(model="llm", messages=ASK, tools=[WEATHER], tool_choice="required",
                                                 temperature=0, max_tokens=80, stream=True))
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(deltas) == 1 and chunks[-1].choices[0].finish_reason == "tool_calls"
    call = deltas[0][0]
    args = weather_args(call)
    follow = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(args)}}]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear", "temperature": 21}'},
    ]
    answer = client.chat.completions.create(model="llm", messages=follow, tools=[WEATHER], temperature=0, max_tokens=8)
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert answer.usage.prompt_tokens > client.chat.completions.create(
        model="llm", messages=ASK, tools=[WEATHER], temperature=0, max_tokens=1).usage.prompt_tokens  # it saw the result


def test_an_auto_answer_in_text_streams_token_by_token(server) -> None:
    """With `auto`, once an answer's first character shows it is no call, it streams as any chat does (it is not
    held to the end), and says the same as the whole answer."""
    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    args = {"model": "llm", "messages": ASK, "tools": [WEATHER, TIME], "temperature": 0, "max_tokens": 40}
    whole = client.chat.completions.create(**args)
    text = whole.choices[0].message.content
    assert whole.choices[0].message.tool_calls is None and text and not text.lstrip().startswith(("{", "[", "<"))
    chunks = list(client.chat.completions.create(**args, stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 5 and "".join(pieces) == text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_huggingface_hub_chat_completion_with_tools(server) -> None:
    client = InferenceClient(base_url=server.url + "/v1")
    done = client.chat_completion(messages=ASK, model="llm", tools=[WEATHER], tool_choice="required", max_tokens=80,
                                  temperature=0)
    call = done.choices[0].message.tool_calls[0]
    arguments = json.loads(call.function.arguments)  # OpenAI's shape: JSON text (TGI sends an object)
    assert call.function.name == "get_weather" and arguments["city"] in ("Paris", "Oslo")


@pytest.mark.parametrize("extra, message", [
    ({"tools": "get_weather"}, "tools"),
    ({"tools": [{"type": "function", "function": {}}]}, "tools[0]"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "no function named"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [WEATHER, WEATHER]}, "unique"),
    ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
])
def test_bad_tool_requests_are_422(server, extra, message) -> None:
    response = httpx.post(server.url + "/v1/chat/completions", json={"model": "llm", "messages": ASK, **extra})
    assert response.status_code == 422 and message in response.json()["error"], response.text


def test_an_auto_answer_is_a_call_only_when_it_is_one() -> None:
    plan = tool_plan({"tools": [WEATHER]})
    assert isinstance(plan, ToolPlan) and not plan.forced and plan.grammar() is None
    call = '{"name": "get_weather", "arguments": {"city": "Oslo", "celsius": true}}'
    for text in (call, f"<tool_call>\n{call}\n</tool_call>"):
        [found] = plan.calls(text)  # type: ignore[misc]
        assert found["function"]["name"] == "get_weather" and json.loads(found["function"]["arguments"])["city"] == "Oslo"
    for text in ("It is sunny.", '{"name": "other", "arguments": {}}', '{"name": "get_weather"}'):
        assert plan.calls(text) is None
    both = plan.calls(f"[{call}, {call}]")
    assert both is not None and len(both) == 2 and both[0]["id"] != both[1]["id"]
    single = tool_plan({"tools": [WEATHER], "parallel_tool_calls": False})
    assert single is not None and single.calls(f"[{call}]") is None
    assert tool_plan({"tools": [WEATHER], "tool_choice": "none"}) is None
