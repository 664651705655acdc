"""Text generation: parameters as TGI and the Hugging Face API name them, chat prompts, token choice, stops.

Token choice reproduces transformers' logits processors (repetition penalty, then temperature, top-k and
top-p, as `generate` orders them) on float32 torch tensors, with OpenAI's frequency and presence penalties
(over the generated tokens, as OpenAI and vLLM define them) and logit_bias after the repetition penalty, and
samples with `torch.multinomial` from a per-sequence generator seeded with the request's seed: a seeded request draws what `torch.manual_seed(seed)`
then `generate(do_sample=True)` draws, whichever other sequences share its batch. torch is imported lazily
so that importing the task table never needs it.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from squeezer.tasks.base import InputError, param, parse_params, positive

FinishReason = Literal["length", "eos_token", "stop_sequence"]
MAX_STOP_SEQUENCES = 4  # TGI's default bound
MAX_SEED = 2**64 - 1
MAX_TOP_N_TOKENS = 20  # OpenAI's bound on top_logprobs (TGI's default is 5)
MAX_LOGIT_BIAS = 100.0  # OpenAI's bound
CHAT_ROLES = ("system", "user", "assistant", "tool")


def _bias_ok(bias: dict[Any, Any]) -> bool:
    """OpenAI's logit_bias: token ids (JSON keys, so strings of digits) to numbers in [-100, 100]."""
    return all(str(k).isdigit() and isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= MAX_LOGIT_BIAS
               for k, v in bias.items())


@dataclass(frozen=True)
class GenerationParams:
    """A generation request's parameters; None means the server default (or the processor is off).

    Sampling is on when `do_sample` is set or any warper is (temperature != 1, top_k, top_p < 1), as TGI
    decides; temperature 0 always means greedy, as OpenAI clients expect.
    """

    max_new_tokens: int | None = param(**positive("must be at least 1"))
    temperature: float | None = param(check=lambda v: v >= 0, rule="must be 0 (greedy) or more")
    top_k: int | None = param(check=lambda v: v >= 0, rule="must be 0 (off) or more")
    top_p: float | None = param(check=lambda v: 0 < v <= 1, rule="must be in (0, 1]")
    repetition_penalty: float | None = param(check=lambda v: v > 0, rule="must be greater than 0")
    frequency_penalty: float | None = param(check=lambda v: -2 <= v <= 2, rule="must be between -2 and 2")
    presence_penalty: float | None = param(check=lambda v: -2 <= v <= 2, rule="must be between -2 and 2")
    logit_bias: dict | None = param(check=_bias_ok, rule="must map token ids to numbers from -100 to 100")  # type: ignore[type-arg]
    do_sample: bool = param(False)
    seed: int | None = param(check=lambda v: 0 <= v <= MAX_SEED, rule="must be between 0 and 2**64 - 1")
    stop: list[str] | None = param()
    return_full_text: bool = param(False)
    num_return_sequences: int = param(1, **positive("must be at least 1"))
    details: bool = param(False)
    top_n_tokens: int | None = param(check=lambda v: 0 <= v <= MAX_TOP_N_TOKENS, rule=f"must be 0 to {MAX_TOP_N_TOKENS}")

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
    return stops or None


@dataclass(frozen=True)
class TokenEvent:
    """One generated token: its id, the text it made stable (maybe empty), and the sequence's counts so far."""

    token_id: int
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


def token_logprobs(logits: np.ndarray, token: int, top_n: int) -> tuple[float, tuple[tuple[int, float], ...]]:
    """The chosen token's log-probability under the model's next-token distribution, and the `top_n` most likely
    tokens with theirs.

    The distribution is the log-softmax of the model's logits, before repetition penalty and sampling warpers
    (vLLM's default): for greedy decoding, the one TGI reports; a sampled token's logprob does not depend on
    the temperature it was drawn at. Only the normaliser is computed over the vocabulary (one exp pass, summed
    in float64); the top tokens are picked on the logits, which order them alike (see `_top_pool`). About
    0.1 ms a token for a 49k vocabulary, where a float64 log-softmax and a partition of it took ten times that.
    """
    peak = float(logits.max())
    normaliser = peak + math.log(float(np.exp(logits - peak).sum(dtype=np.float64)))
    top: tuple[tuple[int, float], ...] = ()
    if top_n:
        pool = _top_pool(logits, top_n)
        best = pool[np.argpartition(logits[pool], -top_n)[-top_n:]] if pool.size > top_n else pool
        best = best[np.argsort(-logits[best], kind="stable")]
        top = tuple((int(i), float(logits[i]) - normaliser) for i in best)
    return float(logits[token]) - normaliser, top


def _top_pool(logits: np.ndarray, top_n: int) -> np.ndarray:
    """Indices that surely hold the `top_n` largest logits, about 64 x top_n of them: the top_n-th largest of
    every 64th logit is no larger than the top_n-th largest of all. Partitioning a whole 49k vocabulary costs
    0.3-0.9 ms a token here; this pool, a tenth of that."""
    sample = logits[::64]
    if sample.size >= top_n:
        pool = np.flatnonzero(logits >= np.partition(sample, -top_n)[-top_n])
        if pool.size >= top_n:
            return pool
    return np.arange(logits.size)


def output_text(prompt: str, generated: str, params: GenerationParams) -> str:
    """The answer's text: the generated text, after the prompt when `return_full_text` asks for it."""
    return prompt + generated if params.return_full_text else generated


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


def _torch() -> Any:
    """torch, for sampling and logits processors (they follow transformers' generate exactly, seeded draws
    included). Greedy decoding needs none of it, so a compiled decoder served without torch still answers."""
    try:
        import torch
    except ImportError:
        raise InputError(
            "sampling and penalties need torch, which this server does not have (install the `torch` extra); "
            "greedy decoding works without it"
        ) from None
    return torch


class TokenChooser:
    """Picks one sequence's next tokens as transformers' `generate` does for the same parameters."""

    def __init__(self, params: GenerationParams, seed: int | None, prompt_length: int = 0) -> None:
        self._penalty = params.repetition_penalty if params.repetition_penalty not in (None, 1.0) else None
        self._frequency, self._presence = params.frequency_penalty or 0.0, params.presence_penalty or 0.0
        self._prompt_length = prompt_length
        self._bias = {int(k): float(v) for k, v in (params.logit_bias or {}).items()}
        self._penalized = params.penalized
        self.sampling = params.sampling
        self._temperature = params.temperature if self.sampling and params.temperature not in (None, 1.0) else None
        self._top_k = params.top_k if self.sampling and params.top_k else None
        self._top_p = params.top_p if self.sampling and params.top_p not in (None, 1.0) else None
        self._generator = _torch().Generator().manual_seed(seed) if self.sampling and seed is not None else None

    @property
    def plain(self) -> bool:
        """Greedy with no processor: the batch's argmax gives this sequence's token."""
        return not self.sampling and not self._penalized

    def process(self, scores: Any, history: Sequence[int]) -> Any:
        """Apply the processors to scores [1, vocab], in generate's order; returns a new tensor."""
        torch = _torch()
        if self._penalty is not None:  # RepetitionPenaltyLogitsProcessor, over prompt and generated tokens
            ids = torch.tensor([list(history)], dtype=torch.long)
            score = torch.gather(scores, 1, ids)
            score = torch.where(score < 0, score * self._penalty, score / self._penalty)
            scores = scores.scatter(1, ids, score)
        if (self._frequency or self._presence) and len(history) > self._prompt_length:  # over the generated tokens
            generated = torch.tensor(list(history[self._prompt_length :]), dtype=torch.long)
            ids, counts = torch.unique(generated, return_counts=True)
            penalty = counts.to(scores.dtype) * self._frequency + self._presence
            scores = scores.index_add(1, ids, -penalty[None])
        if self._bias:  # OpenAI's logit_bias, added like the penalties
            ids = torch.tensor(list(self._bias), dtype=torch.long)
            scores = scores.index_add(1, ids, torch.tensor([list(self._bias.values())], dtype=scores.dtype))
        if self._temperature is not None:  # TemperatureLogitsWarper
            scores = scores / self._temperature
        if self._top_k is not None:  # TopKLogitsWarper
            kth = torch.topk(scores, min(self._top_k, scores.size(-1)))[0][..., -1, None]
            scores = scores.masked_fill(scores < kth, -float("inf"))
        if self._top_p is not None:  # TopPLogitsWarper
            sorted_logits, sorted_indices = torch.sort(scores, descending=False)
            remove = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= (1 - self._top_p)
            remove[..., -1:] = 0
            scores = scores.masked_fill(remove.scatter(1, sorted_indices, remove), -float("inf"))
        return scores

    def choose(self, scores: Any, history: Sequence[int]) -> int:
        """The next token from scores [1, vocab]: argmax, or a draw from the processed distribution."""
        torch = _torch()
        scores = self.process(scores, history)
        if not self.sampling:
            return int(torch.argmax(scores, dim=-1))
        probs = torch.nn.functional.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, num_samples=1, generator=self._generator))


def choose_tokens(choosers: Sequence[TokenChooser], logits: np.ndarray, histories: Sequence[Sequence[int]]) -> list[int]:
    """Next token of each row of logits [n, vocab]; plain greedy rows share one argmax over the batch.

    numpy's argmax, like torch's, returns the first maximum, so greedy rows need no torch.
    """
    tokens = [0] * len(choosers)
    plain = [i for i, chooser in enumerate(choosers) if chooser.plain]
    if plain:
        for i, token in zip(plain, logits[plain].argmax(axis=-1).tolist()):
            tokens[i] = token
    processed = [i for i, chooser in enumerate(choosers) if not chooser.plain]
    if processed:
        scores = _torch().from_numpy(logits)
        for i in processed:
            tokens[i] = choosers[i].choose(scores[i : i + 1], histories[i])
    return tokens


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
        if finish:
            delta += self._detok.flush()
        cut = self._stops.find(self.text, delta)
        if cut is not None:
            delta, finish = delta[:cut], "stop_sequence"
        self.text += delta
        return delta, finish
