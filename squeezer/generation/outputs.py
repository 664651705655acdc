"""What generation hands back: each token as it is generated (TokenEvent), each finished sequence
(Generation), why a sequence stopped, and the answer's text.

The scheduler produces these and the API layers (TGI, OpenAI) render them; kept in their own module so that
both sides share the shapes without depending on token choice or detokenization.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from squeezer.generation.params import GenerationParams

# "grammar": the request's grammar allowed no token the model could produce (`squeezer.generation.grammar.DeadEnd`)
FinishReason = Literal["length", "eos_token", "stop_sequence", "grammar"]


@dataclass(frozen=True)
class TokenEvent:
    """One generated token: its id, the text it made stable (maybe empty), and the sequence's counts so far. A
    sequence that ends without a further token (a grammar's dead end) ends with an event whose `token_id` is None,
    which carries the text still held back and the finish reason."""

    token_id: int | None
    text: str
    is_last: bool
    finish_reason: FinishReason | None  # set on the last event only
    prompt_tokens: int
    generated_tokens: int
    seed: int | None  # the sampling seed (None when greedy), as TGI's details report it
    cached_tokens: int = 0  # prompt tokens taken from the prefix cache (OpenAI's usage reports them)
    logprob: float | None = None  # when the request asked for log-probabilities (see `token_logprobs`)
    top_tokens: tuple[tuple[int, float], ...] = ()  # (token, logprob), most likely first, when top_n_tokens asked


@dataclass(frozen=True)
class Generation:
    """A finished sequence: generated text (prompt excluded), tokens and why it stopped."""

    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    prompt_tokens: int
    generated_tokens: int
    seed: int | None
    cached_tokens: int = 0  # prompt tokens taken from the prefix cache
    logprobs: list[float | None] | None = None  # each token's, when the request asked for them
    top_tokens: list[tuple[tuple[int, float], ...]] | None = None  # each position's most likely, when asked


def output_text(prompt: str, generated: str, params: GenerationParams) -> str:
    """The answer's text: the generated text, after the prompt when `return_full_text` asks for it."""
    return prompt + generated if params.return_full_text else generated
