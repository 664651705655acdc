"""Token choice: the next token of each sequence from the model's logits, greedy or sampled.

Token choice reproduces transformers' logits processors (repetition penalty, then temperature, top-k and
top-p, as `generate` orders them) on float32 torch tensors, with OpenAI's frequency and presence penalties
(over the generated tokens, as OpenAI and vLLM define them) and logit_bias after the repetition penalty, and
samples with `torch.multinomial` from a per-sequence generator seeded with the request's seed: a seeded
request draws what `torch.manual_seed(seed)` then `generate(do_sample=True)` draws, whichever other sequences
share its batch. torch is imported lazily so that importing the server (parameters, the API, the task table)
never needs it, and greedy decoding runs on numpy alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from squeezer.generation.grammar import Constraint, mask_rows
from squeezer.tasks.base import InputError


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


class SamplingParams(Protocol):
    """What a TokenChooser reads of a request's parameters: `params.GenerationParams` has all of it.

    Named structurally because params.py imports this module (for `_torch`), so importing it back would be
    an import cycle.
    """

    @property
    def repetition_penalty(self) -> float | None: ...
    @property
    def frequency_penalty(self) -> float | None: ...
    @property
    def presence_penalty(self) -> float | None: ...
    @property
    def logit_bias(self) -> dict[Any, Any] | None: ...
    @property
    def temperature(self) -> float | None: ...
    @property
    def top_k(self) -> int | None: ...
    @property
    def top_p(self) -> float | None: ...
    @property
    def penalized(self) -> bool: ...
    @property
    def sampling(self) -> bool: ...


class TokenChooser:
    """Picks one sequence's next tokens as transformers' `generate` does for the same parameters."""

    def __init__(self, params: SamplingParams, seed: int | None, prompt_length: int = 0,
                 constraint: Constraint | None = None) -> None:
        self.constraint = constraint  # a grammar the output must follow (`choose_tokens` masks its row first)
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
        return not self.sampling and not self._penalized and self.constraint is None

    def choose_row(self, row: np.ndarray, history: Sequence[int]) -> int:
        """The next token from one row of logits [1, vocab] (numpy; already masked by its grammar, if it has one),
        which the grammar then follows; greedy without processors needs no torch, so a constrained greedy row runs
        on a torch-less server."""
        token = self.choose(_torch().from_numpy(row), history) if self.sampling or self._penalized else int(row.argmax())
        if self.constraint is not None:
            self.constraint.advance(token)
        return token

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
        processed = self.process(scores, history)
        if not self.sampling:
            return int(torch.argmax(processed, dim=-1))
        probs = torch.nn.functional.softmax(processed, dim=-1)
        if _collapsed(torch, probs):
            # A temperature or repetition penalty so small that float32 scores overflow to infinity (softmax
            # then gives NaN, which multinomial refuses): the same processors in float64 usually keep them
            # finite; where even those overflow, the distribution's limit is its argmax.
            processed = self.process(scores.double(), history)
            probs = torch.nn.functional.softmax(processed, dim=-1)
            if _collapsed(torch, probs):
                return int(torch.argmax(torch.nan_to_num(processed, nan=-float("inf")), dim=-1))
        return int(torch.multinomial(probs, num_samples=1, generator=self._generator))


def _collapsed(torch: Any, probs: Any) -> bool:
    """Whether softmax gave no usable distribution (NaN, or nothing left with any probability)."""
    return not bool(torch.isfinite(probs).all()) or not float(probs.sum()) > 0


def choose_tokens(
    choosers: Sequence[TokenChooser], logits: np.ndarray, histories: Sequence[Sequence[int]]
) -> list[int | Exception]:
    """Next token of each row of logits [n, vocab]; plain greedy rows share one argmax over the batch.

    numpy's argmax, like torch's, returns the first maximum, so greedy rows need no torch. A row whose
    processors fail gets its exception in place of a token: it fails that sequence alone, not the batch; a row
    whose grammar allows no token the model can produce gets its `DeadEnd`, which ends that sequence alone.
    """
    tokens: list[int | Exception] = [0] * len(choosers)
    plain = [i for i, chooser in enumerate(choosers) if chooser.plain]
    if plain:
        for i, token in zip(plain, logits[plain].argmax(axis=-1).tolist()):
            tokens[i] = token
    rows: dict[int, np.ndarray | Exception] = {}
    constrained = [i for i, chooser in enumerate(choosers) if chooser.constraint is not None]
    if constrained:
        try:
            rows.update(zip(constrained, mask_rows([choosers[i].constraint for i in constrained], logits[constrained])))  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001  # the masks of the step failed: those rows fail, the others go on
            rows.update((i, exc) for i in constrained)
    for i in [i for i, chooser in enumerate(choosers) if not chooser.plain]:
        try:
            row = rows.get(i, logits[i : i + 1])
            if isinstance(row, Exception):
                raise row
            tokens[i] = choosers[i].choose_row(row, histories[i])
        except Exception as exc:  # noqa: BLE001  # handed back: the decode loop fails this row only
            tokens[i] = exc
    return tokens
