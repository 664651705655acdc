"""The generation gate: a compiled decoder must predict the next token like the float32 torch reference.

Both are driven through the `Decoder` protocol, as the decode loop drives them (all prompts prefilled in one
call, then batched steps), so the gate checks the cache handling the server will use, not a side path.

The reference's greedy continuation of every prompt (up to `new_tokens`, or its first EOS) is computed once.
A candidate is then measured twice:
  - teacher forced: fed the reference's continuation, its next-token distribution at every position is
    compared with the reference's: top-1 agreement and the mean KL divergence KL(reference || candidate).
    Feeding the same tokens keeps one early disagreement from derailing every later comparison.
  - free running: its own greedy continuation must equal the reference's: the fraction of prompts that
    match exactly, and the mean fraction of each continuation matched before the first difference (what a
    user of greedy decoding sees).
The bounds come from the tolerance table in `squeezer.compiler.gate` (family "generation"), scaled by the
accuracy budget; every bound is checked before the verdict, so a rejection lists all that failed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from squeezer.backends.decoder import Decoder
from squeezer.backends.prefix_cache import common_prefix
from squeezer.compiler.gate import DEFAULT_BUDGET, FAMILIES, TOLERANCES, Verdict

TASK = "text-generation"
FAMILY, _ = FAMILIES[TASK]
NEW_TOKENS = 32  # continuation tokens compared per prompt

# (prompt index, position in its continuation, logits there) -> the token to feed next, or None to stop.
Feed = Callable[[int, int, np.ndarray], "int | None"]


@dataclass(frozen=True)
class Continuation:
    """One prompt's greedy continuation and the next-token logits [len(tokens), vocab] that chose it."""

    prompt: list[int]
    tokens: list[int]
    logits: np.ndarray


def decode(decoder: Decoder, prompts: Sequence[Sequence[int]], feed: Feed) -> list[list[np.ndarray]]:
    """Prefill the prompts together, then step every live one until `feed` stops it; each prompt's logits.

    Prompts go in groups of the decoder's `max_sequences`; a sequence's cache is released when it stops,
    and every cache is released if anything fails, so the decoder is left as it was found.
    """
    logits: list[list[np.ndarray]] = [[] for _ in prompts]
    size = max(1, decoder.max_sequences)
    for first in range(0, len(prompts), size):
        group = list(range(first, min(first + size, len(prompts))))
        pending: dict[int, int] = {}  # handle -> token to feed at the next step
        index: dict[int, int] = {}  # handle -> prompt index
        try:
            arrived = decoder.prefill_many([list(prompts[i]) for i in group])
            index = {handle: i for (handle, _), i in zip(arrived, group)}
            while arrived:
                for handle, row in arrived:
                    i = index[handle]
                    logits[i].append(np.asarray(row, dtype=np.float32))
                    token = feed(i, len(logits[i]) - 1, row)
                    if token is None:
                        decoder.release(handle)
                        del index[handle]
                    else:
                        pending[handle] = token
                if not pending:
                    break
                handles = list(pending)
                rows = decoder.step(handles, [pending[h] for h in handles])
                pending = {}
                arrived = list(zip(handles, rows))
        finally:
            for handle in list(index):
                decoder.release(handle)
    return logits


def greedy(decoder: Decoder, prompts: Sequence[Sequence[int]], new_tokens: int) -> list[list[int]]:
    """Each prompt's greedy continuation (as the decode loop picks it): `new_tokens`, or up to its first EOS.

    Returns the tokens; `greedy_with_logits` also returns the logits that chose them.
    """
    return [c.tokens for c in greedy_with_logits(decoder, prompts, new_tokens)]


def greedy_with_logits(decoder: Decoder, prompts: Sequence[Sequence[int]], new_tokens: int) -> list[Continuation]:
    eos = decoder.eos_token_ids
    tokens: list[list[int]] = [[] for _ in prompts]

    def feed(i: int, position: int, row: np.ndarray) -> int | None:
        token = int(np.argmax(row))
        tokens[i].append(token)
        return None if token in eos or position + 1 >= new_tokens else token

    logits = decode(decoder, prompts, feed)
    return [Continuation(list(p), t, np.stack(rows)) for p, t, rows in zip(prompts, tokens, logits)]


def teacher_forced(decoder: Decoder, continuations: Sequence[Continuation]) -> list[np.ndarray]:
    """The decoder's next-token logits at every position of the given continuations, fed their tokens."""

    def feed(i: int, position: int, row: np.ndarray) -> int | None:
        tokens = continuations[i].tokens
        return tokens[position] if position + 1 < len(tokens) else None

    return [np.stack(rows) for rows in decode(decoder, [c.prompt for c in continuations], feed)]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def kl_divergence(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """KL(reference || candidate) of the softmax of each row of logits [positions, vocab], in float64."""
    ref, cand = _log_softmax(reference), _log_softmax(candidate)
    return np.maximum((np.exp(ref) * (ref - cand)).sum(axis=-1), 0.0)


def generation_metrics(reference: Sequence[Continuation], forced: Sequence[np.ndarray],
                       free: Sequence[Sequence[int]]) -> dict[str, float]:
    """The gate's metrics from the reference's continuations, the candidate's teacher-forced logits on them
    and the candidate's own greedy continuations."""
    top1 = np.concatenate([f.argmax(-1) == np.asarray(r.tokens) for r, f in zip(reference, forced)])
    kl = np.concatenate([kl_divergence(r.logits, f) for r, f in zip(reference, forced)])
    exact = [list(r.tokens) == list(c) for r, c in zip(reference, free)]
    prefix = [common_prefix(r.tokens, c) / max(len(r.tokens), 1) for r, c in zip(reference, free)]
    return {"top1_agreement": float(top1.mean()), "mean_kl": float(kl.mean()), "max_kl": float(kl.max()),
            "greedy_exact": float(np.mean(exact)), "greedy_prefix": float(np.mean(prefix))}


class GenerationGate:
    """Holds the prompts and the reference's continuations; judges candidate decoders against them."""

    def __init__(self, reference: Decoder, prompts: Sequence[Sequence[int]], new_tokens: int = NEW_TOKENS,
                 budget: float | None = None) -> None:
        if not prompts or any(not p for p in prompts):
            raise ValueError("the generation gate needs non-empty prompts")
        self.budget = DEFAULT_BUDGET[TASK] if budget is None else budget
        self.bounds = TOLERANCES[FAMILY]
        self.new_tokens = new_tokens
        self.prompts = [list(p) for p in prompts]
        self.reference = greedy_with_logits(reference, self.prompts, new_tokens)

    @property
    def positions(self) -> int:
        """Next-token predictions compared per candidate (teacher forced)."""
        return sum(len(c.tokens) for c in self.reference)

    @property
    def limits(self) -> dict[str, str]:
        """Each bound as text, for the report: `top1_agreement >= 0.9`."""
        return {b.metric: f"{'>=' if b.at_least else '<='} {b.limit(self.budget):.4f}" for b in self.bounds}

    def judge(self, candidate: Decoder) -> Verdict:
        forced = teacher_forced(candidate, self.reference)
        free = greedy(candidate, self.prompts, self.new_tokens)
        metrics = generation_metrics(self.reference, forced, free)
        failures = [v for b in self.bounds if (v := b.violation(metrics[b.metric], self.budget))]
        return Verdict({k: round(v, 6) for k, v in metrics.items()}, tuple(failures))
