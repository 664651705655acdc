"""A tool call read as it is generated, for streaming it in OpenAI's shape (`squeezer.api.chat.call_chunks`).

OpenAI (and vLLM) stream a call as a first `delta.tool_calls` item with its `index`, `id`, `type` and
`function.name` (and `arguments: ""`), then items with only `{index, function: {arguments: piece}}` as the
argument text is generated; a client joins the pieces of each index (the openai client's stream helpers do).
Streaming that needs to know, character by character, which field of which call the text belongs to.

A call that a grammar enforces (`tool_choice` "required" or a named function, `ToolPlan.grammar`) is JSON from its
first character: `{"name": ..., "arguments": {...}}`, or a list of them. `CallReader` follows only the nesting and
the strings of that JSON, which is enough to tell a call's keys, its name and its arguments' text apart; vLLM
instead re-parses the whole text so far with a partial-JSON parser at every token and diffs the results, which
costs a parse per token and has to guess at unfinished values. The pieces sent are the generated text itself, so
joined they are the arguments' JSON text as the model wrote it (the whole answer's `arguments` is the same value,
re-serialized).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from squeezer.api.tools import call_id


@dataclass
class _Call:
    """One call in the answer: its name once read, and argument text read before it (sent with the name)."""

    index: int
    name: str | None = None
    held: str = ""


class CallReader:
    """Turns a call's JSON text, fed as it arrives, into OpenAI's `delta.tool_calls` items."""

    def __init__(self) -> None:
        self._depth = 0  # containers open
        self._string = self._escaped = False
        self._level = 0  # the depth inside a call object: 1 for one call, 2 for a list of them; 0 until seen, -1 none
        self._calls: list[_Call] = []
        self._part = ""  # at a call's level: "key" or "value" being read, "" outside a call
        self._key: Any = None  # the field whose value is being read
        self._text = ""  # the key's or the value's text so far

    def feed(self, text: str) -> list[dict[str, Any]]:
        """The `delta.tool_calls` items the text adds: at most one per call, pieces of one call joined."""
        items: dict[int, dict[str, Any]] = {}
        for char in text:
            self._read(char, items)
        return list(items.values())

    def _read(self, char: str, items: dict[int, dict[str, Any]]) -> None:
        if self._level == 0:
            if not char.isspace():
                self._level = {"{": 1, "[": 2}.get(char, -1)  # anything else is no call: nothing is read
            if self._level <= 0:
                return
        if self._level < 0:
            return
        if self._string:
            self._escaped, self._string = (False, True) if self._escaped else (char == "\\", char != '"')
        elif char == '"':
            self._string = True
        elif char in "{[":
            self._depth += 1
            if self._depth == self._level and char == "{":  # a call begins: its first key follows
                self._calls.append(_Call(len(self._calls)))
                self._part, self._text = "key", ""
                return
        elif char in "}]":
            self._depth -= 1
            if self._depth == self._level - 1 and self._part:  # the call ends, with its last field
                self._end_field(items)
                self._part = ""
                return
        elif self._depth == self._level and char == ":" and self._part == "key":
            self._key, self._part, self._text = _loads(self._text), "value", ""
            return
        elif self._depth == self._level and char == "," and self._part:
            self._end_field(items)
            self._part, self._text = "key", ""
            return
        if not self._part or (self._part == "value" and not self._text and char.isspace()):
            return  # between calls, or blanks before a value
        self._text += char
        if self._part == "value" and self._key == "arguments":
            self._send(self._calls[-1], char, items)

    def _end_field(self, items: dict[int, dict[str, Any]]) -> None:
        """A field's value is complete: a name opens its call (the first item, with what arguments came before)."""
        call = self._calls[-1]
        name = _loads(self._text) if self._part == "value" and self._key == "name" else None
        if isinstance(name, str) and call.name is None:
            call.name = name
            items[call.index] = {"index": call.index, "id": call_id(), "type": "function",
                                 "function": {"name": name, "arguments": call.held}}
            call.held = ""

    def _send(self, call: _Call, piece: str, items: dict[int, dict[str, Any]]) -> None:
        if call.name is None:
            call.held += piece
            return
        item = items.setdefault(call.index, {"index": call.index, "function": {"arguments": ""}})
        item["function"]["arguments"] += piece


def _loads(text: str) -> Any:
    """A complete JSON value's text as its value (None when it is not one)."""
    try:
        return json.loads(text)
    except ValueError:
        return None
