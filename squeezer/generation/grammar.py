"""Constrained decoding: a sequence's output kept inside a grammar (a JSON schema, a regular expression), token by
token, so it is valid by construction rather than prompted and hoped for.

The grammar engine is llguidance (MIT; Rust; works on numpy logits; vLLM and llama.cpp use it), chosen over
xgrammar and outlines-core because it needs no torch, builds its token trie from the Hugging Face tokenizer
itself, and computes a token mask in microseconds for large vocabularies (it is lazy: only the tokens the
lexer can reach are walked). Requests name grammars as TGI does (`{"type": "json" | "regex", "value": ...}`);
OpenAI's `response_format` maps onto the json form (see `squeezer.api.chat`).

A `Grammars` belongs to one model: its llguidance tokenizer (built once, about a second) and a bounded cache of
compiled grammars, each copied for every sequence that uses it. A `Constraint` is one sequence's matcher;
`mask_rows` masks every constrained row of a step in one call before the choice, and each constraint then follows
its chosen token. Rows without one pay nothing.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from squeezer.caches import LRUCache
from squeezer.tasks.base import InputError

GRAMMAR_TYPES = ("json", "regex")
MAX_GRAMMAR_CHARS = 64_000  # a schema or pattern's text; compiling one costs time on the prep thread
COMPILED_GRAMMARS = 64  # distinct grammars kept compiled per model


def _llguidance() -> Any:
    try:
        import llguidance
        import llguidance.hf
        import llguidance.numpy
    except ImportError:
        raise InputError("structured output needs llguidance (a dependency of squeezer): pip install llguidance") from None
    return llguidance


def grammar_text(grammar: Any) -> str:
    """The llguidance grammar for a request's `grammar` parameter, or an InputError (422) naming the problem."""
    if not isinstance(grammar, dict) or grammar.get("type") not in GRAMMAR_TYPES or "value" not in grammar:
        raise InputError('parameters.grammar: expected {"type": "json" | "regex", "value": schema or pattern}')
    kind, value = grammar["type"], grammar["value"]
    if kind == "json":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise InputError("parameters.grammar.value: the JSON schema is not valid JSON") from None
        if not isinstance(value, dict):
            raise InputError("parameters.grammar.value: a JSON schema must be an object")
        # compact JSON (no blanks between tokens), not any whitespace anywhere: a model may otherwise wander in
        # blanks between the tokens that matter, and every blank is a decode step (the schema may say otherwise)
        text = json.dumps({"x-guidance": {"whitespace_flexible": False}, **value})
    elif isinstance(value, str) and value:
        text = value
    else:
        raise InputError("parameters.grammar.value: a regex grammar needs a non-empty pattern")
    if len(text) > MAX_GRAMMAR_CHARS:
        raise InputError(f"parameters.grammar.value: {len(text)} characters exceed the limit of {MAX_GRAMMAR_CHARS}")
    return str(_llguidance().grammar_from("json_schema" if kind == "json" else "regex", text))


class Constraint:
    """One sequence's grammar state: its matcher, which `mask_rows` asks for the allowed tokens and `advance`
    moves past the token chosen."""

    def __init__(self, matcher: Any, vocab: int) -> None:
        self.matcher, self.vocab = matcher, vocab

    def advance(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise InputError(f"parameters.grammar: token {token} breaks the grammar ({self.matcher.get_error()})")


@functools.cache
def _executor() -> Any:
    """llguidance's thread pool for masks, made once per process."""
    return _llguidance().LLExecutor()


class DeadEnd(Exception):
    """A row whose grammar allows no token the model can produce (none at all, or only tokens whose logits are -inf
    or NaN). Not a failure of the request: the answer so far is all the grammar let the model write, so the decode
    loop ends that row with finish reason "grammar" and logs this message, which says which of the two it was."""


def mask_rows(constraints: list[Constraint], rows: np.ndarray) -> list[np.ndarray | DeadEnd]:
    """Each row of logits [n, vocab] with the tokens its grammar forbids at -inf (a copy, [1, vocab] each), or a
    DeadEnd where nothing allowed is left. One call computes every mask of the step, in parallel."""
    llg = _llguidance()
    vocab = constraints[0].vocab  # one model's constraints share its tokenizer
    bitmask = llg.numpy.allocate_token_bitmask(len(constraints), vocab)
    llg.numpy.fill_next_token_bitmask_par(_executor(), [(c.matcher, i) for i, c in enumerate(constraints)], bitmask)
    masked = np.array(rows[:, :vocab], dtype=np.float32)
    llg.numpy.apply_token_bitmask_inplace(masked, bitmask)
    if masked.shape[1] < rows.shape[1]:  # logits past the tokenizer's vocabulary are padding: never allowed
        masked = np.concatenate([masked, np.full((len(rows), rows.shape[1] - vocab), -np.inf, np.float32)], axis=1)
    return [masked[i : i + 1] if np.isfinite(masked[i]).any() else _dead_end(c, bool(bitmask[i].any()))
            for i, c in enumerate(constraints)]


def _dead_end(constraint: Constraint, allowed: bool) -> DeadEnd:
    why = "the model gives every token it allows a logit of -inf or NaN" if allowed else "it allows no token at all"
    return DeadEnd(f"the grammar cannot go on: {why} ({constraint.matcher.get_error() or 'no error from llguidance'})")


def _check_start(llg: Any, matcher: Any, vocab: int) -> None:
    """An InputError when a compiled grammar cannot begin any text: a schema whose `$ref`s only lead to each other
    compiles, then stops at its first mask. Found here, it is a 422, not a 200 with empty content. One mask, on a
    copy, once per grammar (the compiled grammars are cached)."""
    probe = matcher.deep_copy()
    llg.numpy.fill_next_token_bitmask(probe, llg.numpy.allocate_token_bitmask(1, vocab), 0)
    if probe.is_error():
        why = (probe.get_error() or "").split("\n", 1)[0]  # the rest is llguidance's parser state
        raise InputError(f"parameters.grammar: no text satisfies it (llguidance: {why or 'no error given'})")


class Grammars:
    """One model's llguidance tokenizer and its compiled grammars (thread-safe: prep and decode threads use it)."""

    def __init__(self, tokenizer: Any, eos_ids: Iterable[int]) -> None:
        self._hf, self._eos = tokenizer, sorted(eos_ids)
        self._tokenizer: Any = None
        self._compiled: LRUCache[Any] = LRUCache(COMPILED_GRAMMARS)
        self._lock = threading.Lock()

    def _llg_tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = _llguidance().hf.from_tokenizer(self._hf, eos_token=self._eos or None)
        return self._tokenizer

    def _prototype(self, grammar: Any) -> Any:
        text = grammar_text(grammar)
        with self._lock:
            found = self._compiled.get(text)
            if found is None:
                llg = _llguidance()
                found = llg.LLMatcher(self._llg_tokenizer(), text)
                if found.is_error():
                    raise InputError(f"parameters.grammar: cannot compile it: {found.get_error()}")
                _check_start(llg, found, self._llg_tokenizer().vocab_size)
                self._compiled.put(text, found)
            return found

    def check(self, grammar: Any) -> None:
        """Compile (and cache) a request's grammar before it is queued: a bad one is a 422 here."""
        self._prototype(grammar)

    def constraint(self, grammar: Any) -> Constraint:
        """A fresh matcher for one sequence (a copy of the compiled grammar)."""
        prototype = self._prototype(grammar)
        with self._lock:
            matcher = prototype.deep_copy()
        return Constraint(matcher, self._llg_tokenizer().vocab_size)
