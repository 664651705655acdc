"""OpenAI tool calling on the chat route: `tools`, `tool_choice` and the `tool_calls` answer.

The functions reach the model through its chat template when the template takes `tools`, else through a default
tool prompt (`squeezer.generation.chat.TOOL_PROMPT`) that asks for `{"name", "arguments"}` as JSON. With
`tool_choice` "required" or a named function, a grammar makes the answer exactly such a call, with arguments
valid for that function's schema; with "auto" the model may answer in text, and an answer that is a call (bare, or
in `<tool_call>` tags as Hermes-style templates write it) becomes `tool_calls`; "none" hides the tools.
With `parallel_tool_calls` (OpenAI's default) an answer may also be a JSON list of calls, up to MAX_CALLS.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from squeezer.errors import ClientError

MAX_CALLS = 8  # calls in one answer with parallel_tool_calls
TAGGED = re.compile(r"^\s*<tool_call>\s*(.*?)\s*(</tool_call>)?\s*$", re.DOTALL)
CALL_STARTS = ("{", "[", "<")  # how an answer that is a call begins (after blanks): `calls` reads nothing else


@dataclass(frozen=True)
class ToolPlan:
    """The functions a chat may call and how: `forced` when a grammar makes the answer a call."""

    tools: list[dict[str, Any]]
    names: frozenset[str]
    forced: bool
    parallel: bool = True

    def grammar(self) -> dict[str, Any] | None:
        """The TGI-style grammar of a call to one of `tools`, when the answer must be one."""
        if not self.forced:
            return None
        calls = [{"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
                  "properties": {"name": {"enum": [t["function"]["name"]]},
                                 "arguments": t["function"].get("parameters") or {"type": "object"}}}
                 for t in self.tools]
        one = calls[0] if len(calls) == 1 else {"anyOf": calls}
        several = {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_CALLS}
        return {"type": "json", "value": {"anyOf": [one, several]} if self.parallel else one}

    def calls(self, text: str) -> list[dict[str, Any]] | None:
        """The answer as OpenAI's `tool_calls`, or None when it is not a call to one of the tools."""
        tagged = TAGGED.match(text)
        try:
            value = json.loads(tagged.group(1) if tagged else text)
        except ValueError:
            return None
        listed = value if isinstance(value, list) and self.parallel and 0 < len(value) <= MAX_CALLS else [value]
        if not all(isinstance(v, dict) and v.get("name") in self.names and isinstance(v.get("arguments"), dict) for v in listed):
            return None
        return [{"id": call_id(), "type": "function",
                 "function": {"name": v["name"], "arguments": json.dumps(v["arguments"])}} for v in listed]


def call_id() -> str:
    """A fresh id for one call, in OpenAI's form, which the `role: "tool"` turn answering it quotes."""
    return f"call_{uuid.uuid4().hex[:24]}"


def tool_plan(body: dict[str, Any]) -> ToolPlan | None:
    """Read `tools` and `tool_choice` (422 for what cannot work); None when the chat uses no tools."""
    tools, choice, parallel = body.get("tools"), body.get("tool_choice", "auto"), body.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise ClientError("parallel_tool_calls: expected true or false", status=422)
    if tools is not None:
        _listed(tools)  # `{}` or `""` is a mistake to name, not a chat without tools
    if not tools or choice == "none":
        if choice not in ("none", "auto", "required") and not isinstance(choice, dict):
            raise ClientError('tool_choice: expected "none", "auto", "required" or {"type": "function", ...}', status=422)
        return None
    checked = [_function(tool, i) for i, tool in enumerate(_listed(tools))]
    names = [t["function"]["name"] for t in checked]
    if len(set(names)) < len(names):
        raise ClientError("tools: function names must be unique", status=422)
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
        if name not in names:
            raise ClientError(f"tool_choice: no function named {name!r} among the tools", status=422)
        checked = [t for t in checked if t["function"]["name"] == name]
        return ToolPlan(checked, frozenset([name]), forced=True, parallel=parallel)
    if choice not in ("auto", "required"):
        raise ClientError('tool_choice: expected "none", "auto", "required" or {"type": "function", ...}', status=422)
    return ToolPlan(checked, frozenset(names), forced=choice == "required", parallel=parallel)


def _listed(tools: Any) -> list[Any]:
    if not isinstance(tools, list) or len(tools) > 128:
        raise ClientError("tools: expected a list of at most 128 functions", status=422)
    return tools


def _function(tool: Any, i: int) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise ClientError(f'tools[{i}]: expected {{"type": "function", "function": {{"name", "parameters"?}}}}', status=422)
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise ClientError(f"tools[{i}].function.parameters: expected a JSON schema object", status=422)
    kept = {k: function[k] for k in ("name", "description", "parameters") if function.get(k) is not None}
    return {"type": "function", "function": kept}
