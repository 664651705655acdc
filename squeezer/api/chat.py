"""The OpenAI dialect for generation: `POST /v1/chat/completions` and `POST /v1/completions`.

Also reachable as `/models/{id}/v1/chat/completions`, where huggingface_hub's InferenceClient sends chat
requests when its model is a URL. OpenAI defaults apply: sampling at temperature 1 unless the request says
otherwise, `max_tokens` optional, stop sequences left out of the answer, `[DONE]` closing a stream.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, Depends, Request

from squeezer.api.auth import require_api_key, scope_of
from squeezer.api.reasoning import ReasoningStream, opens_reasoning, split_reasoning
from squeezer.api.tool_stream import CallReader
from squeezer.api.tools import CALL_STARTS, ToolPlan, tool_plan
from squeezer.api.body import model_name, read_json_object, waits_for_model
from squeezer.api.generation import OPENAI_FINISH, sse, strip_stop
from squeezer.api.openai_logprobs import chat_logprobs, logprob_parameters, text_logprobs
from squeezer.api.responses import FastJSONResponse, unless_disconnected
from squeezer.api.schemas import openai_chat, openai_completions, request_body
from squeezer.engine import Engine
from squeezer.errors import ClientError
from squeezer.generation.outputs import TokenEvent
from squeezer.runtime.base import CHAT, GENERATE, Completion, Streaming

router = APIRouter(dependencies=[Depends(require_api_key)])

# OpenAI body field -> generation parameter.
RENAMED = {"max_tokens": "max_new_tokens", "max_completion_tokens": "max_new_tokens", "n": "num_return_sequences"}
PASSED = ("temperature", "top_p", "seed", "stop", "frequency_penalty", "presence_penalty", "logit_bias")


def openai_field(message: str, body: dict[str, Any], chat: bool) -> str:
    """An error about a generation parameter, named by the OpenAI field the client sent (`n`, not
    `parameters.num_return_sequences`)."""
    field, sep, rest = message.removeprefix("parameters.").partition(":")
    if not sep or not message.startswith("parameters."):
        return message
    sent = {"num_return_sequences": "n", "top_n_tokens": "top_logprobs" if chat else "logprobs", "grammar": "response_format",
            "max_new_tokens": "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"}
    return f"{sent.get(field, field)}:{rest}"


@contextmanager
def openai_names(body: dict[str, Any], chat: bool) -> Iterator[None]:
    """Errors raised inside name the OpenAI fields (see `openai_field`)."""
    try:
        yield
    except ClientError as exc:
        exc.args = (openai_field(str(exc), body, chat),)
        raise


def openai_parameters(body: dict[str, Any], chat: bool) -> dict[str, Any]:
    """Map an OpenAI request onto generation parameters (tools aside: see `squeezer.api.tools`)."""
    params = {RENAMED.get(k, k): v for k, v in body.items() if (k in RENAMED or k in PASSED) and v is not None}
    params.update(logprob_parameters(body, chat))
    grammar = response_grammar(body.get("response_format"))
    if grammar is not None:
        params["grammar"] = grammar
    params.setdefault("temperature", 1.0)  # OpenAI samples by default
    if params["temperature"] != 0:
        params["do_sample"] = True
    return params


def response_grammar(response_format: Any) -> dict[str, Any] | None:
    """OpenAI's `response_format` as a TGI grammar: json_object is any JSON object, json_schema its schema."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json", "value": {"type": "object"}}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise ClientError("response_format.json_schema: expected {\"name\", \"schema\": {...}}", status=422)
        return {"type": "json", "value": spec["schema"]}
    raise ClientError('response_format.type: expected "text", "json_object" or "json_schema"', status=422)


def usage(prompt: int, generated: int, cached: int) -> dict[str, Any]:
    """OpenAI's usage object; `prompt_tokens_details.cached_tokens` counts prompt tokens from the prefix cache."""
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated,
            "prompt_tokens_details": {"cached_tokens": cached}}


def completion_usage(completion: Completion) -> dict[str, Any]:
    generations = completion.generations
    return usage(len(completion.prompt.ids), sum(g.generated_tokens for g in generations),
                 max(g.cached_tokens for g in generations))


def assistant_turn(text: str, finish: str, plan: ToolPlan | None, opened: bool | None = None) -> tuple[dict[str, Any], str]:
    """The assistant's message and finish reason: its reasoning apart (unless `opened` is None: inline), and the
    tool call it made, when it made one."""
    reasoning, text = split_reasoning(text, opened) if opened is not None else (None, text)
    calls = plan.calls(text) if plan is not None else None
    message: dict[str, Any] = {"role": "assistant", "content": None if calls else text}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if calls:
        return {**message, "tool_calls": calls}, "tool_calls"
    return message, finish


def reasoning_opened(request: Request, prompt: str, plan: ToolPlan | None) -> bool | None:
    """For `assistant_turn`: None when reasoning stays inline, else whether the prompt opened the block. A call a
    grammar enforces is JSON from its first token, never a block, whatever the prompt opened."""
    split = request.app.state.server_config.reasoning == "split" and not (plan is not None and plan.forced)
    return opens_reasoning(prompt) if split else None


def chat_object(completion: Completion, request_id: str, plan: ToolPlan | None = None, opened: bool | None = None) -> dict[str, Any]:
    turns = [assistant_turn(strip_stop(g.text, completion.params.stop), OPENAI_FINISH[g.finish_reason], plan, opened)
             for g in completion.generations]
    choices = [
        {
            "index": i,
            "message": turns[i][0],
            "finish_reason": turns[i][1],
            "logprobs": None if g.logprobs is None or g.top_tokens is None
            else chat_logprobs(completion.vocabulary, g.token_ids, g.logprobs, g.top_tokens),
        }
        for i, g in enumerate(completion.generations)
    ]
    return {"id": request_id, "object": "chat.completion", "created": int(time.time()), "model": completion.model_id,
            "choices": choices, "usage": completion_usage(completion)}


def text_object(completion: Completion, request_id: str, echo: bool) -> dict[str, Any]:
    prefix = completion.prompt.text if echo else ""
    choices = []
    for i, g in enumerate(completion.generations):
        logprobs = None
        if g.logprobs is not None and g.top_tokens is not None:
            logprobs = text_logprobs(completion.vocabulary, g.token_ids, g.logprobs, g.top_tokens, len(prefix))
        choices.append({"index": i, "text": prefix + strip_stop(g.text, completion.params.stop),
                        "finish_reason": OPENAI_FINISH[g.finish_reason], "logprobs": logprobs})
    return {"id": request_id, "object": "text_completion", "created": int(time.time()), "model": completion.model_id,
            "choices": choices, "usage": completion_usage(completion)}


# A chunk's fields from (its text, the token events it covers, the answer's characters sent before it).
Shape = Callable[[str, list[TokenEvent], int], dict[str, Any]]


def chat_base(streaming: Streaming, request_id: str) -> dict[str, Any]:
    """The fields every chunk of a streamed chat repeats."""
    return {"id": request_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": streaming.model_id}


def opening(base: dict[str, Any]) -> dict[str, Any]:
    """A streamed chat's first chunk, as OpenAI sends it: the role, no content yet."""
    return {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}


def chat_piece(streaming: Streaming, delta: dict[str, Any], events: list[TokenEvent]) -> dict[str, Any]:
    """A chat chunk's fields: its delta, and the logprobs of the tokens it covers when they were asked for."""
    if not streaming.params.wants_logprobs:
        return {"delta": delta}
    return {"delta": delta, "logprobs": chat_logprobs(streaming.vocabulary, *_columns(events))}


async def chat_chunks(streaming: Streaming, request_id: str, include_usage: bool,
                      opened: bool | None = None) -> AsyncIterator[dict[str, Any]]:
    """Streamed chat; with `opened` not None, the reasoning block goes to `delta.reasoning_content`."""
    base = chat_base(streaming, request_id)
    splitter = ReasoningStream(opened) if opened is not None else None

    def delta(reasoning: str, content: str) -> dict[str, str]:
        return {**({"reasoning_content": reasoning} if reasoning else {}), **({"content": content} if content else {})}

    def shape(text: str, events: list[TokenEvent], sent: int) -> dict[str, Any]:
        return chat_piece(streaming, delta(*splitter.feed(text)) if splitter else delta("", text), events)

    yield opening(base)
    async for chunk in _deltas(streaming, base, shape, include_usage):
        choices = chunk["choices"]
        if splitter and choices and choices[0]["finish_reason"] is not None:  # the end: what the splitter held
            held = delta(*splitter.flush())
            choices[0]["delta"] = {k: choices[0]["delta"].get(k, "") + held.get(k, "") for k in {*choices[0]["delta"], *held}}
        yield chunk


class Replayed:
    """An event stream that gives back the events already read (to tell what the answer is) before the rest."""

    def __init__(self, held: list[TokenEvent], rest: AsyncIterator[TokenEvent], stream: Any) -> None:
        self.held, self.rest, self.stream = held, rest, stream

    async def __aiter__(self) -> AsyncIterator[TokenEvent]:
        for event in self.held:
            yield event
        if not (self.held and self.held[-1].is_last):
            async for event in self.rest:
                yield event

    async def aclose(self) -> None:
        await self.stream.aclose()


async def call_chunks(streaming: Streaming, request_id: str, include_usage: bool,
                      plan: ToolPlan) -> AsyncIterator[dict[str, Any]]:
    """A call that a grammar enforces, streamed as OpenAI streams one: each call's first item (index, id, type,
    name) as soon as its name is generated, then its arguments piece by piece as tokens arrive (`CallReader`), then
    `finish_reason: "tool_calls"` once the whole answer is the call (an answer cut short keeps its own reason)."""
    base = chat_base(streaming, request_id)
    wanted, reader, text = streaming.params.wants_logprobs, CallReader(), []

    def shape(piece: str, events: list[TokenEvent], sent: int) -> dict[str, Any]:
        text.append(piece)
        calls = reader.feed(piece)
        return chat_piece(streaming, {"tool_calls": calls} if calls else {}, events)

    yield opening(base)
    async for chunk in _deltas(streaming, base, shape, include_usage):
        choices = chunk["choices"]
        if choices and choices[0]["finish_reason"] is not None and plan.calls("".join(text)):
            choices[0]["finish_reason"] = "tool_calls"
        if not choices or choices[0]["delta"] or choices[0]["finish_reason"] is not None or wanted:
            yield chunk  # a piece inside the JSON's punctuation adds nothing to send


async def tool_chunks(streaming: Streaming, request_id: str, include_usage: bool, plan: ToolPlan,
                      opened: bool | None = None) -> AsyncIterator[dict[str, Any]]:
    """A chat that may call a tool, streamed. A call a grammar enforces streams as it is generated (`call_chunks`).
    With `auto`, an answer whose first character shows it is no call (a call is bare JSON, a list of them or
    `<tool_call>`: it starts with `{`, `[` or `<`) streams token by token as any chat does; otherwise the answer is
    held until it ends (free text is a call only if the whole of it is one, which its end may still deny), then
    sent as one delta, `tool_calls` in OpenAI's streamed shape or the text."""
    if plan.forced:
        async for chunk in call_chunks(streaming, request_id, include_usage, plan):
            yield chunk
        return
    base = chat_base(streaming, request_id)
    events, held, visible = aiter(streaming.events), [], ""
    if not opened:  # an answer that opens inside a reasoning block is held whole
        async for event in events:
            held.append(event)
            visible = "".join(e.text for e in held).lstrip()
            if visible or event.is_last:
                break
        if visible and not visible.startswith(CALL_STARTS):
            replayed = dataclasses.replace(streaming, events=Replayed(held, events, streaming.events))
            async for chunk in chat_chunks(replayed, request_id, include_usage, opened):
                yield chunk
            return
    yield opening(base)
    text, last = "".join(e.text for e in held), held[-1] if held else None
    if last is None or not last.is_last:
        async for event in events:
            text, last = text + event.text, event
    if last is None:
        return
    message, finish = assistant_turn(strip_stop(text, streaming.params.stop), OPENAI_FINISH[last.finish_reason or "length"],
                                     plan, opened)
    delta = ({"tool_calls": [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]}
             if message.get("tool_calls") else {"content": message["content"]})
    if message.get("reasoning_content") is not None:
        delta["reasoning_content"] = message["reasoning_content"]
    yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if include_usage:
        yield {**base, "choices": [], "usage": usage(last.prompt_tokens, last.generated_tokens, last.cached_tokens)}


async def text_chunks(streaming: Streaming, request_id: str, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    base = {"id": request_id, "object": "text_completion", "created": int(time.time()), "model": streaming.model_id}
    wanted = streaming.params.wants_logprobs

    def shape(text: str, events: list[TokenEvent], sent: int) -> dict[str, Any]:
        return {"text": text, "logprobs": text_logprobs(streaming.vocabulary, *_columns(events), sent) if wanted else None}

    async for chunk in _deltas(streaming, base, shape, include_usage):
        yield chunk


def _columns(events: list[TokenEvent]) -> tuple[list[int], list[float | None], list[tuple[tuple[int, float], ...]]]:
    """The chosen tokens' columns (a grammar's dead end ends on an event that chose none)."""
    chosen = [(e.token_id, e.logprob, e.top_tokens) for e in events if e.token_id is not None]
    return [t for t, _, _ in chosen], [lp for _, lp, _ in chosen], [top for _, _, top in chosen]


def may_start_stop(text: str, stops: list[str] | None) -> bool:
    """Whether the text ends with the beginning of a stop sequence (so it must not be sent yet)."""
    return any(text.endswith(stop[:k]) for stop in stops or [] for k in range(1, min(len(stop), len(text)) + 1))


async def _deltas(streaming: Streaming, base: dict[str, Any], shape: Shape, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    """One chunk per token with new text (holding back a possible stop sequence), then the finish, then usage."""
    pending, held, sent, last = "", [], 0, None
    async for event in streaming.events:
        pending += event.text
        held.append(event)
        last = event
        if event.is_last:
            break
        if pending and not may_start_stop(pending, streaming.params.stop):
            yield {**base, "choices": [{"index": 0, **shape(pending, held, sent), "finish_reason": None}]}
            pending, held, sent = "", [], sent + len(pending)
    if last is None:
        return
    tail = strip_stop(pending, streaming.params.stop)
    finish = OPENAI_FINISH[last.finish_reason or "length"]
    yield {**base, "choices": [{"index": 0, **shape(tail, held, sent), "finish_reason": finish}]}
    if include_usage:
        yield {**base, "choices": [], "usage": usage(last.prompt_tokens, last.generated_tokens, last.cached_tokens)}


async def _completions(request: Request, path_model: str | None, chat: bool) -> Any:
    body = await read_json_object(request, request.app.state.server_config.max_payload_bytes)
    with openai_names(body, chat):
        return await _answer(request, body, path_model, chat)


async def _answer(request: Request, body: dict[str, Any], path_model: str | None, chat: bool) -> Any:
    engine: Engine = request.app.state.engine
    model_id = engine.resolve(path_model or model_name(body), CHAT if chat else GENERATE)
    params = openai_parameters(body, chat)
    prompt, messages = (None, body.get("messages")) if chat else (body.get("prompt"), None)
    if messages is None and chat:
        raise ClientError("messages: required", status=422)
    plan = tool_plan(body) if chat else None
    if not chat and body.get("tools"):
        raise ClientError("tools: only chat completions call tools", status=422)
    tools = plan.tools if plan is not None else None
    if plan is not None and plan.forced:
        if "grammar" in params:
            raise ClientError("response_format: cannot be combined with a required tool call", status=422)
        params["grammar"] = plan.grammar()
    request_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    scope = scope_of(request, body.get("cache_salt"))
    stream, wait = body.get("stream"), waits_for_model(request)
    if stream is not None and not isinstance(stream, bool):
        raise ClientError(f"stream: expected true or false, got {stream!r}", status=422)
    if stream:
        options = body.get("stream_options") or {}
        if not isinstance(options, dict):
            raise ClientError(f"stream_options: expected an object, got {type(options).__name__}", status=422)
        include_usage = bool(options.get("include_usage"))
        streaming = await engine.stream(model_id, prompt, messages, params, wait_for_model=wait, scope=scope, tools=tools)
        opened = reasoning_opened(request, streaming.prompt.text, plan) if chat else None
        if plan is not None:
            chunks = tool_chunks(streaming, request_id, include_usage, plan, opened)
        elif chat:
            chunks = chat_chunks(streaming, request_id, include_usage, opened)
        else:
            chunks = text_chunks(streaming, request_id, include_usage)
        return sse(chunks, request.app.state.stopping, openai=True)
    generating = engine.generate(model_id, prompt, messages, params, wait_for_model=wait, scope=scope, tools=tools)
    completion = await unless_disconnected(request, generating)
    if chat:
        return FastJSONResponse(chat_object(completion, request_id, plan, reasoning_opened(request, completion.prompt.text, plan)))
    return FastJSONResponse(text_object(completion, request_id, bool(body.get("echo"))))


@router.post("/v1/chat/completions", openapi_extra=request_body(openai_chat()))
async def chat_completions(request: Request) -> Any:
    return await _completions(request, None, chat=True)


async def chat_for_model(request: Request, model_id: str) -> Any:
    """`/models/{id}/v1/chat/completions`: huggingface_hub's chat_completion with a model URL."""
    return await _completions(request, model_id, chat=True)


@router.post("/v1/completions", openapi_extra=request_body(openai_completions()))
async def completions(request: Request) -> Any:
    return await _completions(request, None, chat=False)
