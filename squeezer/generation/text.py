"""Generated tokens back to text: detokenization that never splits a character, and stop sequences.

Kept together because a stop sequence is found in the decoded text, delta by delta, and decides where that
text ends (SequenceText ties them with EOS and `max_new_tokens` into one sequence's finish reason). Needs a
tokenizer only, neither torch nor the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from squeezer.generation.outputs import FinishReason
from squeezer.generation.params import GenerationParams


class StopMatcher:
    """Finds the first stop sequence in generated text as it grows, looking only where a new match can be."""

    def __init__(self, stops: Sequence[str] | None) -> None:
        self._stops = list(stops or [])
        self._tail = max((len(s) for s in self._stops), default=1) - 1

    def find(self, text: str, delta: str) -> int | None:
        """Where in `delta` (appended to `text`) the earliest stop sequence ends, or None."""
        if not self._stops or not delta:
            return None
        tail = text[len(text) - self._tail :] if self._tail else ""
        window = tail + delta
        ends = [window.find(s) + len(s) for s in self._stops if s in window]
        return max(0, min(ends) - len(tail)) if ends else None


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas that never split a character.

    It decodes a short window (a few tokens of context before the unread ones) and emits only the text that
    the new tokens added, holding back while the text ends in U+FFFD (an incomplete UTF-8 sequence from a
    byte-level token): correct for byte-level BPE and SentencePiece alike, whose leading spaces depend on
    the previous token. The prompt's last tokens seed the context, so the first word keeps its space.
    """

    CONTEXT = 5

    def __init__(self, tokenizer: Any, prompt_ids: Sequence[int]) -> None:
        self._tokenizer = tokenizer
        self._ids = list(prompt_ids[-self.CONTEXT :])  # context tokens, then the unread ones
        self._read = len(self._ids)

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add(self, token: int) -> str:
        """Add one token; return the text that is now stable (possibly empty)."""
        self._ids.append(token)
        return self._emit(final=False)

    def flush(self) -> str:
        """Whatever text is still held back (at the end of a sequence)."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        before = self._decode(self._ids[: self._read])
        after = self._decode(self._ids)
        if len(after) <= len(before) or (after.endswith("\ufffd") and not final):
            return ""
        self._ids = self._ids[self._read :]  # the tokens just emitted become the next context
        self._read = len(self._ids)
        return after[len(before) :]


class SequenceText:
    """One sequence's text as its tokens arrive: stable deltas, stop sequences and the finish reason.

    Generation ends at the first of a stop sequence in the text (the text is cut just after it, which TGI
    also keeps), an EOS token, or `max_new_tokens`; the last delta carries any text held back until then.
    """

    def __init__(
        self, tokenizer: Any, prompt_ids: Sequence[int], params: GenerationParams, eos: frozenset[int], max_new_tokens: int
    ) -> None:
        self._detok = IncrementalDecoder(tokenizer, prompt_ids)
        self._stops = StopMatcher(params.stop)
        self._eos = eos
        self._max_new = max_new_tokens
        self.generated = 0
        self.text = ""

    def add(self, token: int) -> tuple[str, FinishReason | None]:
        """Record one token; return the text it made stable and, if it ends the sequence, why."""
        self.generated += 1
        delta = self._detok.add(token)
        finish: FinishReason | None = None
        if token in self._eos:
            finish = "eos_token"
        elif self.generated >= self._max_new:
            finish = "length"
        return self._close(delta, finish)

    def end(self, reason: FinishReason) -> tuple[str, FinishReason | None]:
        """End the sequence without a further token (its grammar allowed none the model could produce): the text
        still held back, and why it ended."""
        return self._close("", reason)

    def _close(self, delta: str, finish: FinishReason | None) -> tuple[str, FinishReason | None]:
        """The delta as sent: with the held-back text when the sequence ends, cut at a stop sequence."""
        if finish:
            delta += self._detok.flush()
        cut = self._stops.find(self.text, delta)
        if cut is not None:
            delta, finish = delta[:cut], "stop_sequence"
        self.text += delta
        return delta, finish
