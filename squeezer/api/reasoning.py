"""Reasoning models: the `<think>...</think>` block a chat template makes the model write first, answered apart
as `reasoning_content` (vLLM's and llama.cpp's field; DeepSeek's API), so clients show or hide it and parse
the answer without it. `--reasoning inline` keeps it in the content instead.

A model whose template opens the block in the prompt (the answer starts inside it) writes only `</think>`; an
answer cut short inside the block is all reasoning. Streamed, a piece that might be the start of a tag is held
back until the next one says what it is.
"""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


def opens_reasoning(prompt: str) -> bool:
    """Whether the chat template opened the block in the prompt, so the answer starts inside it."""
    return prompt.rstrip().endswith(OPEN)


def split_reasoning(text: str, opened: bool = False) -> tuple[str | None, str]:
    """(reasoning, content) of a whole answer; reasoning is None when the answer has no block."""
    stripped = text.lstrip()
    if not (opened or stripped.startswith(OPEN)):
        return None, text
    reasoning, found, content = stripped.removeprefix(OPEN).partition(CLOSE)
    return reasoning.strip(), content.lstrip() if found else ""  # no CLOSE: cut short inside the block


class ReasoningStream:
    """Splits streamed text into reasoning and content pieces as it arrives."""

    def __init__(self, opened: bool = False) -> None:
        self._held = ""
        self._state = "reasoning" if opened else "start"  # start: nothing seen yet; reasoning, after (it), content

    def feed(self, text: str) -> tuple[str, str]:
        """(reasoning piece, content piece) that can be sent now."""
        self._held += text
        reasoning = content = ""
        while self._held:
            if self._state == "after":  # just past the block: the blank lines between it and the answer are dropped
                self._held = self._held.lstrip()
                self._state = "content" if self._held else "after"
            elif self._state == "content":
                content, self._held = content + self._held, ""
            elif self._state == "start":
                stripped = self._held.lstrip()
                if stripped.startswith(OPEN):
                    self._state, self._held = "reasoning", stripped[len(OPEN):]
                elif OPEN.startswith(stripped):  # blank, or maybe the tag's beginning: wait for more
                    break
                else:
                    self._state = "content"
            else:  # reasoning, until CLOSE
                before, found, after = self._held.partition(CLOSE)
                if found:
                    reasoning, self._held, self._state = reasoning + before, after, "after"
                    continue
                keep = _tag_prefix(self._held, CLOSE)
                reasoning, self._held = reasoning + self._held[: len(self._held) - keep], self._held[len(self._held) - keep:]
                break
        return reasoning, content

    def flush(self) -> tuple[str, str]:
        """What is still held at the end of the answer."""
        held, self._held = self._held, ""
        return (held, "") if self._state == "reasoning" else ("", held if self._state != "after" else held.lstrip())


def _tag_prefix(text: str, tag: str) -> int:
    """How many characters at the end of `text` could begin `tag`."""
    return next((k for k in range(min(len(tag) - 1, len(text)), 0, -1) if text.endswith(tag[:k])), 0)
