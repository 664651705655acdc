"""Chat prompts: OpenAI-style messages checked, then rendered to token ids by the model's own chat template.

Apart from the rest of generation because only chat requests (and the compiler's calibration prompts) need
it, and all it needs is a tokenizer.
"""

from __future__ import annotations

from typing import Any

from squeezer.tasks.base import InputError

CHAT_ROLES = ("system", "user", "assistant", "tool")


def check_messages(messages: Any) -> list[dict[str, str]]:
    """Validate OpenAI-style chat messages: a non-empty list of {role, content} with string content."""
    if not isinstance(messages, list) or not messages:
        raise InputError("messages: expected a non-empty list of {role, content} objects")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InputError(f"messages[{i}]: expected an object with role and content")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise InputError(f"messages[{i}].role: must be one of {', '.join(CHAT_ROLES)}, got {role!r}")
        checked.append({"role": role, "content": _message_text(message.get("content"), f"messages[{i}].content")})
    return checked


def _message_text(content: Any, name: str) -> str:
    """A message's text: a string, or OpenAI's list of text parts ([{"type": "text", "text": ...}]) joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        if all(isinstance(p.get("text"), str) for p in content):
            return "".join(p["text"] for p in content)
    raise InputError(f"{name}: expected a string or a list of text parts")


def chat_prompt_ids(tokenizer: Any, messages: Any) -> list[int]:
    """Token ids of the conversation through the model's own chat template, ready for the assistant's turn."""
    checked = check_messages(messages)
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("messages: this model has no chat template; send a plain text prompt instead")
    try:
        ids = tokenizer.apply_chat_template(checked, add_generation_prompt=True, tokenize=True)
    except Exception as exc:  # templates raise on conversations they refuse (roles out of order, ...)
        raise InputError(f"messages: the model's chat template refused them: {exc}") from None
    return list(ids)
