"""Chat prompts: OpenAI-style messages checked, then rendered to token ids by the model's own chat template.

Apart from the rest of generation because only chat requests (and the compiler's calibration prompts) need
it, and all it needs is a tokenizer.
"""

from __future__ import annotations

import json
from typing import Any

from squeezer.tasks.base import InputError

CHAT_ROLES = ("system", "user", "assistant", "tool")


def check_messages(messages: Any) -> list[dict[str, Any]]:
    """Validate OpenAI-style chat messages: a non-empty list of {role, content} with string content; an assistant
    turn may carry `tool_calls` instead of content, and a tool turn its `tool_call_id`."""
    if not isinstance(messages, list) or not messages:
        raise InputError("messages: expected a non-empty list of {role, content} objects")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InputError(f"messages[{i}]: expected an object with role and content")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise InputError(f"messages[{i}].role: must be one of {', '.join(CHAT_ROLES)}, got {role!r}")
        calls = message.get("tool_calls") if role == "assistant" else None
        content = message.get("content")
        text = "" if calls and content is None else _message_text(content, f"messages[{i}].content")
        out: dict[str, Any] = {"role": role, "content": text}
        if calls:
            out["tool_calls"] = _tool_calls(calls, f"messages[{i}].tool_calls")
        if role == "tool" and isinstance(message.get("tool_call_id"), str):
            out["tool_call_id"] = message["tool_call_id"]
        checked.append(out)
    return checked


def _tool_calls(calls: Any, name: str) -> list[dict[str, Any]]:
    """An assistant turn's earlier tool calls, with their arguments as objects (what chat templates expect;
    OpenAI clients send them as JSON text)."""
    if not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("function"), dict) for c in calls):
        raise InputError(f"{name}: expected a list of {{id, type, function: {{name, arguments}}}}")
    out = []
    for j, call in enumerate(calls):
        function = call["function"]
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except ValueError:
                raise InputError(f"{name}[{j}].function.arguments: not valid JSON") from None
        if not isinstance(function.get("name"), str) or not isinstance(arguments, dict):
            raise InputError(f"{name}[{j}].function: expected a name and arguments (an object)")
        out.append({"id": call.get("id"), "type": "function", "function": {"name": function["name"], "arguments": arguments}})
    return out


def _message_text(content: Any, name: str) -> str:
    """A message's text: a string, or OpenAI's list of text parts ([{"type": "text", "text": ...}]) joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        if all(isinstance(p.get("text"), str) for p in content):
            return "".join(p["text"] for p in content)
    raise InputError(f"{name}: expected a string or a list of text parts")


TOOL_PROMPT = (
    "You can call these functions. To call one, answer with only a JSON object "
    '{{"name": <function name>, "arguments": <its arguments as an object>}}; to call several, a JSON list of '
    "such objects.\n{tools}"
)


def default_tool_turns(checked: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation for a template that knows nothing of tools: the tools described in the system turn, and
    earlier calls and results written out as text (the documented default tool prompt)."""
    listing = "\n".join(json.dumps(tool["function"]) for tool in tools)
    system = TOOL_PROMPT.format(tools=listing)
    turns: list[dict[str, Any]] = []
    for message in checked:
        if message.get("tool_calls"):
            calls = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in message["tool_calls"]]
            turns.append({"role": "assistant", "content": json.dumps(calls[0] if len(calls) == 1 else calls)})
        elif message["role"] == "tool":
            turns.append({"role": "user", "content": f"Function result: {message['content']}"})
        else:
            turns.append({"role": message["role"], "content": message["content"]})
    if turns[0]["role"] == "system":
        return [{"role": "system", "content": f"{turns[0]['content']}\n\n{system}"}, *turns[1:]]
    return [{"role": "system", "content": system}, *turns]


def chat_prompt_ids(tokenizer: Any, messages: Any, tools: list[dict[str, Any]] | None = None) -> list[int]:
    """Token ids of the conversation through the model's own chat template, ready for the assistant's turn.
    `tools` (OpenAI's function list) go to a template that takes them, else into the default tool prompt."""
    checked = check_messages(messages)
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise InputError("messages: this model has no chat template; send a plain text prompt instead")
    extra: dict[str, Any] = {}
    if tools and "tools" in str(template):
        extra["tools"] = tools
    elif tools:
        checked = default_tool_turns(checked, tools)
    try:
        ids = tokenizer.apply_chat_template(checked, add_generation_prompt=True, tokenize=True, **extra)
    except Exception as exc:  # templates raise on conversations they refuse (roles out of order, ...)
        raise InputError(f"messages: the model's chat template refused them: {exc}") from None
    return list(ids)
