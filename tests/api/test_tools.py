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

from squeezer.api.tool_stream import CallReader
from squeezer.api.tools import ToolPlan, tool_plan
from squeezer.testing.server import ServerProcess
from tests.helpers import error_message

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


def streamed_items(chunks) -> list:
    """The `delta.tool_calls` items of a stream, in order."""
    return [item for c in chunks if c.choices and c.choices[0].delta.tool_calls for item in c.choices[0].delta.tool_calls]


def test_a_streamed_call_and_the_conversation_after_it(server) -> None:
    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    with client.chat.completions.stream(model="llm", messages=ASK, tools=[WEATHER], tool_choice="required",
                                        temperature=0, max_tokens=80) as stream:  # the openai client joins the pieces
        done = stream.get_final_completion()
    assert done.choices[0].finish_reason == "tool_calls" and len(done.choices[0].message.tool_calls) == 1
    call = done.choices[0].message.tool_calls[0]
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


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
@pytest.mark.parametrize("parallel", [False, True])
def test_a_streamed_call_sends_its_arguments_as_they_are_generated(server, choice, parallel) -> None:
    """OpenAI's streamed shape: each call's first item has its index, id, type and name, the next ones only pieces
    of its arguments, several of them (one per token or so, not the whole at the end); joined per index they are
    the calls of the same answer unstreamed, and the stream ends with finish_reason "tool_calls"."""
    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    request = {"model": "llm", "messages": ASK, "tools": [WEATHER, TIME], "tool_choice": choice, "temperature": 0,
               "max_tokens": 160, "parallel_tool_calls": parallel}
    whole = client.chat.completions.create(**request)
    chunks = list(client.chat.completions.create(**request, stream=True))
    items = streamed_items(chunks)
    expected = whole.choices[0].message.tool_calls
    assert whole.choices[0].finish_reason == chunks[-1].choices[0].finish_reason == "tool_calls"
    for index, call in enumerate(expected):
        mine = [item for item in items if item.index == index]
        first, rest = mine[0], mine[1:]
        assert first.id.startswith("call_") and first.type == "function" and first.function.name == call.function.name
        assert all(item.id is None and item.function.name is None for item in rest)
        assert len([item for item in mine if item.function.arguments]) > 1
        assert json.loads("".join(item.function.arguments for item in mine)) == json.loads(call.function.arguments)
    assert {item.index for item in items} == set(range(len(expected)))


def test_huggingface_hub_streams_a_call(server) -> None:
    """huggingface_hub's chat_completion(stream=True) reads the pieces; joined, they are the unstreamed call."""
    client = InferenceClient(base_url=server.url + "/v1")
    request = {"messages": ASK, "model": "llm", "tools": [WEATHER], "tool_choice": "required", "max_tokens": 80,
               "temperature": 0}
    whole = client.chat_completion(**request).choices[0].message.tool_calls[0]
    chunks = list(client.chat_completion(**request, stream=True))
    items = [item for c in chunks if c.choices and c.choices[0].delta.tool_calls for item in c.choices[0].delta.tool_calls]
    assert items[0].function.name == "get_weather" and items[0].id.startswith("call_") and len(items) > 2
    assert json.loads("".join(item.function.arguments for item in items)) == json.loads(whole.function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


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
    ({"tools": {}}, "tools"),
    ({"tools": {}, "tool_choice": "none"}, "tools"),
    ({"tools": [{"type": "function", "function": {}}]}, "tools[0]"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "no function named"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [WEATHER, WEATHER]}, "unique"),
    ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
])
def test_bad_tool_requests_are_422(server, extra, message) -> None:
    response = httpx.post(server.url + "/v1/chat/completions", json={"model": "llm", "messages": ASK, **extra})
    assert response.status_code == 422 and message in error_message(response), response.text


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


@pytest.mark.parametrize("text, calls", [
    ('{"name":"get_weather","arguments":{"city":"Pa\\"ris}","celsius":true,"x":[1,{"a":"]"}]}}',
     [("get_weather", {"city": 'Pa"ris}', "celsius": True, "x": [1, {"a": "]"}]})]),
    ('[{"name":"get_time","arguments":{"zone":"UTC"}},{"name":"get_weather","arguments":{}}]',
     [("get_time", {"zone": "UTC"}), ("get_weather", {})]),
    (' { "arguments" : {"zone": "CET"} , "name" : "get_time" } ', [("get_time", {"zone": "CET"})]),
    ("It is sunny.", []),
])
def test_the_call_reader_reads_the_text_however_it_is_cut(text, calls) -> None:
    """Fed in pieces of any size (brackets and quotes inside strings included), the items name each call once, in
    its first item, and its argument pieces join into its arguments; arguments before the name wait for it."""
    for size in (1, 2, 5, len(text)):
        reader, names, arguments = CallReader(), {}, {}
        for start in range(0, len(text), size):
            for item in reader.feed(text[start:start + size]):
                if "id" in item:
                    assert item["index"] not in names and item["type"] == "function" and item["id"].startswith("call_")
                    names[item["index"]] = item["function"]["name"]
                assert item["index"] in names  # nothing of a call before its first item
                arguments[item["index"]] = arguments.get(item["index"], "") + item["function"]["arguments"]
        assert [(names[i], json.loads(arguments[i])) for i in sorted(names)] == calls
