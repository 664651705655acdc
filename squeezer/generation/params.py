"""A generation request's parameters, as TGI and the Hugging Face API name them (with OpenAI's penalties and
logit_bias), validated before the request is queued.

Kept apart from token choice so that reading and checking a request needs neither torch nor a model: only a
request that samples or penalizes asks for torch here (see `sampling._torch`), so a server without it refuses
such a request at once rather than mid-decoding.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

from squeezer.generation.sampling import _torch
from squeezer.tasks.base import MAX_SEED, InputError, param, parse_params, positive

MAX_STOP_SEQUENCES = 4  # TGI's default bound
# Characters in one stop sequence: matching runs on every token, and a held-back partial match is as long as a
# stop, so an unbounded one would let one request hold the event loop (tried: 450k-character stops, minutes).
MAX_STOP_LENGTH = 256
MAX_TOP_N_TOKENS = 20  # OpenAI's bound on top_logprobs (TGI's default is 5)
MAX_LOGIT_BIAS = 100.0  # OpenAI's bound
MAX_RETURN_SEQUENCES = 16  # sequences one request may ask for (`n`, num_return_sequences): each takes a decode slot


def _bias_ok(bias: dict[Any, Any]) -> bool:
    """OpenAI's logit_bias: token ids (JSON keys, so strings of digits) to numbers in [-100, 100]."""
    return all(_token_id(k) and isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= MAX_LOGIT_BIAS
               for k, v in bias.items())


def _token_id(key: Any) -> bool:
    """A JSON key that names a token id: ASCII digits only (`str.isdigit` also takes "²", which `int` refuses)."""
    text = str(key)
    return text.isascii() and text.isdigit() and len(text) <= 12


@dataclass(frozen=True)
class GenerationParams:
    """A generation request's parameters; None means the server default (or the processor is off).

    Sampling is on when `do_sample` is set or any warper is (temperature != 1, top_k, top_p < 1), as TGI
    decides; temperature 0 always means greedy, as OpenAI clients expect.
    """

    max_new_tokens: int | None = param(**positive("must be at least 1"))
    temperature: float | None = param(bounds={"minimum": 0}, rule="must be 0 (greedy) or more")
    top_k: int | None = param(bounds={"minimum": 0}, rule="must be 0 (off) or more")
    top_p: float | None = param(bounds={"exclusiveMinimum": 0, "maximum": 1}, rule="must be in (0, 1]")
    repetition_penalty: float | None = param(bounds={"exclusiveMinimum": 0}, rule="must be greater than 0")
    frequency_penalty: float | None = param(bounds={"minimum": -2, "maximum": 2}, rule="must be between -2 and 2")
    presence_penalty: float | None = param(bounds={"minimum": -2, "maximum": 2}, rule="must be between -2 and 2")
    logit_bias: dict | None = param(check=_bias_ok, rule="must map token ids to numbers from -100 to 100")  # type: ignore[type-arg]
    do_sample: bool = param(False)
    seed: int | None = param(bounds={"minimum": 0, "maximum": MAX_SEED}, rule="must be between 0 and 2**64 - 1")
    stop: list[str] | None = param()
    return_full_text: bool = param(False)
    num_return_sequences: int = param(1, bounds={"minimum": 1, "maximum": MAX_RETURN_SEQUENCES},
                                      rule=f"must be from 1 to {MAX_RETURN_SEQUENCES}")
    details: bool = param(False)
    top_n_tokens: int | None = param(bounds={"minimum": 0, "maximum": MAX_TOP_N_TOKENS}, rule=f"must be 0 to {MAX_TOP_N_TOKENS}")
    grammar: dict | None = param()  # type: ignore[type-arg]  # TGI's {"type": "json" | "regex", "value"}: see generation.grammar

    def __post_init__(self) -> None:
        if self.stop is not None and len(self.stop) > MAX_STOP_SEQUENCES:
            raise InputError(f"parameters.stop: at most {MAX_STOP_SEQUENCES} stop sequences, got {len(self.stop)}")
        if self.num_return_sequences > 1 and not self.sampling:
            raise InputError("parameters.num_return_sequences: more than 1 needs sampling (do_sample or a temperature)")
        if self.sampling or self.penalized:
            _torch()  # refused here, before queueing, on a server without torch

    @classmethod
    def parse(cls, raw: Any) -> GenerationParams:
        """Validate a request's `parameters`.

        `stop` is checked here rather than by `parse_params`, which refuses blank strings: a newline is a
        common stop sequence. An empty list (what many clients send) means no stop sequence.
        """
        if not isinstance(raw, dict) or raw.get("stop") is None:
            return parse_params(cls, raw)
        params = parse_params(cls, {k: v for k, v in raw.items() if k != "stop"})
        return dataclasses.replace(params, stop=_stop_sequences(raw["stop"]))

    @property
    def penalized(self) -> bool:
        """Whether any penalty changes the logits (each is off at its neutral value)."""
        penalties = (self.frequency_penalty, self.presence_penalty, self.logit_bias)
        return self.repetition_penalty not in (None, 1.0) or any(bool(p) for p in penalties)

    def check_vocabulary(self, size: int) -> None:
        """Refuse a logit_bias for tokens the model does not have (the tokenizer's `size` ids)."""
        outside = [k for k in self.logit_bias or {} if int(k) >= size]
        if outside:
            ids = ", ".join(map(str, outside[:5]))
            raise InputError(f"parameters.logit_bias: token ids {ids} are not in the vocabulary of {size}")

    @property
    def wants_logprobs(self) -> bool:
        """Whether each token's log-probability is reported (TGI's details, OpenAI's logprobs)."""
        return self.details or bool(self.top_n_tokens)

    @property
    def sampling(self) -> bool:
        if self.temperature == 0:
            return False
        warped = self.temperature not in (None, 1.0) or bool(self.top_k) or self.top_p not in (None, 1.0)
        return self.do_sample or warped

    def seeds(self) -> list[int | None]:
        """One seed per returned sequence: the request's seed (or a random one) counting up; None when greedy."""
        if not self.sampling:
            return [None] * self.num_return_sequences
        base = random.getrandbits(63) if self.seed is None else self.seed
        return [(base + i) % (MAX_SEED + 1) for i in range(self.num_return_sequences)]


def _stop_sequences(value: Any) -> list[str] | None:
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise InputError("parameters.stop: expected a list of non-empty strings")
    if any(len(s) > MAX_STOP_LENGTH for s in stops):
        raise InputError(f"parameters.stop: each stop sequence may have at most {MAX_STOP_LENGTH} characters")
    return stops or None
