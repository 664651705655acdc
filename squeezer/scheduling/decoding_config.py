"""Limits of text generation: how many sequences decode together, how much cache they may hold, what one asks.

Kept apart from `squeezer.config` but built the same way (`setting` help texts, `_check` errors naming the
flag), so the CLI and environment variables can be derived from it like every other config.
"""

from __future__ import annotations

from dataclasses import dataclass

from squeezer.config import _check, setting
from squeezer.tasks.base import InputError


@dataclass(frozen=True)
class DecodingConfig:
    """How generation requests share a causal LM (continuous batching) and what one request may ask for."""

    max_batch_sequences: int = setting(16, "Most sequences decoded together in one step.")
    max_tokens_in_flight: int = setting(
        32768,
        "KV-cache budget of the running batch, in tokens: sequences x the longest one's prompt + max new tokens "
        "(the cache holds that rectangle). Newcomers wait past it.",
    )
    max_prefill_tokens: int = setting(
        512,
        "Most prompt tokens prefilled in one forward. A burst of newcomers past it is prefilled in several "
        "forwards with decode steps between them, so the first of them start streaming sooner (a longer "
        "prompt still runs, alone).",
    )
    max_input_tokens: int = setting(1024, "Most prompt tokens in one generation request (422 beyond).")
    max_total_tokens: int = setting(2048, "Most prompt + new tokens in one generation request (422 beyond).")
    max_new_tokens: int = setting(1024, "Most new tokens one generation request may ask for (422 beyond).")
    default_new_tokens: int = setting(100, "New tokens generated when a request does not set max_new_tokens.")
    max_waiting: int = setting(128, "Most generation requests waiting for a slot; beyond it requests get 429.")
    prefix_cache_mb: int = setting(
        256,
        "Memory (MiB) for the keys and values of finished sequences, reused by later prompts that begin the same "
        "way (chat template and system prompt, earlier turns of a conversation): only the rest is prefilled. "
        "Compiled (ONNX) decoders; 0 turns it off.",
    )

    def __post_init__(self) -> None:
        for name in ("max_batch_sequences", "max_prefill_tokens", "max_input_tokens", "max_new_tokens", "default_new_tokens", "max_waiting"):
            _check(getattr(self, name) >= 1, name, "must be at least 1")
        _check(self.prefix_cache_mb >= 0, "prefix_cache_mb", "must be at least 0 (0 turns the prefix cache off)")
        _check(
            self.max_total_tokens > self.max_input_tokens,
            "max_total_tokens",
            f"must exceed --max-input-tokens ({self.max_input_tokens}) to leave room for new tokens",
        )
        _check(
            self.max_tokens_in_flight >= self.max_total_tokens,
            "max_tokens_in_flight",
            f"must be at least --max-total-tokens ({self.max_total_tokens}), or the longest request could never run",
        )
        _check(
            self.default_new_tokens <= self.max_new_tokens,
            "default_new_tokens",
            f"must not exceed --max-new-tokens ({self.max_new_tokens})",
        )

    def new_tokens_for(self, prompt_tokens: int, asked: int | None, context: int) -> int:
        """A request's max new tokens, or a 422 naming the limit it passes; `context` is the model's."""
        total = min(self.max_total_tokens, context)
        inputs = min(self.max_input_tokens, total - 1)
        if prompt_tokens == 0:
            raise InputError("inputs: the prompt has no tokens")
        if prompt_tokens > inputs:
            raise InputError(f"inputs: {prompt_tokens} tokens exceed the maximum of {inputs} input tokens")
        if asked is not None and asked > self.max_new_tokens:
            raise InputError(f"parameters.max_new_tokens: must be at most {self.max_new_tokens}, got {asked}")
        new_tokens = asked or min(self.default_new_tokens, total - prompt_tokens)
        if prompt_tokens + new_tokens > total:
            raise InputError(
                f"parameters.max_new_tokens: {prompt_tokens} input tokens + {new_tokens} new tokens exceed the "
                f"maximum of {total} total tokens"
            )
        return new_tokens
