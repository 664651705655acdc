"""The accuracy gate: a candidate must answer like the PyTorch reference, within the task's tolerance.

Generic and data-driven: the same validation requests run through the reference and the candidate (as
the server runs them, `squeezer.requests.plan` -> backend -> `answer`), a per-task metric function
compares the two on what the task means (pooled embeddings, labels, entities, spans, top-k tokens), and a
tolerance table turns the accuracy budget into one bound per metric. Every bound is checked before the
verdict, so a rejection lists all that failed, with the numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from squeezer import heap
from squeezer.backends.base import Backend, Batch, split_outputs
from squeezer.compiler.validation_data import Example
from squeezer.loading import LoadedModel
from squeezer.requests import Plan, answer, plan
from squeezer.tasks import InputError, ModelInfo
from squeezer.tasks.embeddings import sentence_embedding

Outputs = list[dict[str, np.ndarray]]


@dataclass(frozen=True)
class Bound:
    """One metric's bound: `at_least` 1 - scale x budget (agreements), or at most scale x budget (differences)."""

    metric: str
    at_least: bool
    scale: float

    def limit(self, budget: float) -> float:
        return 1.0 - self.scale * budget if self.at_least else self.scale * budget

    def violation(self, value: float, budget: float) -> str | None:
        limit = self.limit(budget)
        ok = value >= limit if self.at_least else value <= limit
        return None if ok else f"{self.metric} {value:.4f} {'<' if self.at_least else '>'} {limit:.4f}"


# The budget is the loss allowed on each task's first metric; the defaults are what users of the task notice.
DEFAULT_BUDGET: dict[str, float] = {
    "feature-extraction": 0.01,
    "sentence-similarity": 0.01,
    "text-classification": 0.02,
    "zero-shot-classification": 0.02,
    "token-classification": 0.05,
    "question-answering": 0.1,
    "fill-mask": 0.1,
    "text-generation": 0.1,  # next-token top-1 loss (squeezer.compiler.generation_gate)
}

TOLERANCES: dict[str, tuple[Bound, ...]] = {
    # token_min_cosine is measured only for a model served as token embeddings (no pooling of its own)
    "embedding": (Bound("min_cosine", True, 1.0), Bound("mean_cosine", True, 0.25), Bound("token_min_cosine", True, 1.0)),
    "classification": (Bound("label_agreement", True, 1.0), Bound("max_prob_diff", False, 2.5)),
    "token-classification": (Bound("entity_agreement", True, 1.0), Bound("token_label_agreement", True, 1.0)),
    "question-answering": (Bound("exact_span", True, 1.0),),
    "fill-mask": (Bound("top1_agreement", True, 1.0), Bound("topk_overlap", True, 2.0)),
    # Next-token agreement and KL (teacher forced) measure the loss; greedy continuations diverge at any near-tie,
    # so their looser bounds only catch a candidate that derails (broken cache, positions or weights).
    "generation": (Bound("top1_agreement", True, 1.0), Bound("mean_kl", False, 0.5), Bound("greedy_prefix", True, 4.0),
                   Bound("greedy_exact", True, 6.0)),
}

# Task -> (metric family, the task whose answers the metrics read). Embeddings are compared pooled.
FAMILIES: dict[str, tuple[str, str]] = {
    "feature-extraction": ("embedding", "feature-extraction"),
    "sentence-similarity": ("embedding", "feature-extraction"),
    "text-classification": ("classification", "text-classification"),
    "zero-shot-classification": ("classification", "zero-shot-classification"),
    "token-classification": ("token-classification", "token-classification"),
    "question-answering": ("question-answering", "question-answering"),
    "fill-mask": ("fill-mask", "fill-mask"),
    "text-generation": ("generation", "text-generation"),  # judged by generation_gate.GenerationGate, not Gate
}


@dataclass
class Run:
    """One backend's results on the validation set: per-request answers and per-feature head outputs."""

    answers: list[Any]
    outputs: list[Outputs]


# ---------------------------------------------------------------------------------------------- metrics


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def embedding_metrics(ref: Run, cand: Run, info: ModelInfo) -> dict[str, float]:
    """Cosine of pooled sentence embeddings (the model's own pooling, mean without one), as /embed and
    /v1/embeddings answer; for a model without pooling, whose feature-extraction answer is every token's vector,
    also the smallest cosine of any token: a pooled mean hides one token gone astray (a tiny BERT's OpenVINO int8
    passed at 0.992 pooled while a token of its served answer fell to 0.78)."""
    def pooled(output: dict[str, np.ndarray]) -> np.ndarray:
        return sentence_embedding(output["last_hidden_state"], info.pooling, None)

    pairs = [(r, c) for rs, cs in zip(ref.outputs, cand.outputs) for r, c in zip(rs, cs)]
    cosines = [_cosine(pooled(r), pooled(c)) for r, c in pairs]
    metrics = {"min_cosine": min(cosines), "mean_cosine": float(np.mean(cosines))}
    if info.pooling is None:
        metrics["token_min_cosine"] = min(_min_token_cosine(r["last_hidden_state"], c["last_hidden_state"]) for r, c in pairs)
    return metrics


def _min_token_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest cosine between two [tokens, hidden] arrays, token by token."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
    return float(((a * b).sum(-1) / norms).min())


def _ranking(result: Any) -> list[dict[str, Any]]:
    """A classification answer as one ranked label list (text-classification nests it one level deeper)."""
    return result[0] if result and isinstance(result[0], list) else result


def classification_metrics(ref: Run, cand: Run, info: ModelInfo) -> dict[str, float]:
    """Same top label, and the largest probability difference on any label."""
    agree, diffs = [], [0.0]
    for r, c in zip(ref.answers, cand.answers):
        r, c = _ranking(r), _ranking(c)
        agree.append(r[0]["label"] == c[0]["label"])
        scores = {e["label"]: e["score"] for e in c}
        diffs += [abs(e["score"] - scores.get(e["label"], 0.0)) for e in r]
    return {"label_agreement": float(np.mean(agree)), "max_prob_diff": float(max(diffs))}


def _entities(result: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {(e.get("entity_group", e.get("entity")), e["start"], e["end"]) for e in result}


def token_metrics(ref: Run, cand: Run, info: ModelInfo) -> dict[str, float]:
    """Entity agreement (F1 of the grouped entities, 1 when both find none) and per-token label agreement."""
    found = expected = common = 0
    for r, c in zip(ref.answers, cand.answers):
        re, ce = _entities(r), _entities(c)
        found, expected, common = found + len(ce), expected + len(re), common + len(re & ce)
    pairs = [(r, c) for rs, cs in zip(ref.outputs, cand.outputs) for r, c in zip(rs, cs)]
    tokens = [r["logits"].argmax(-1) == c["logits"].argmax(-1) for r, c in pairs]
    f1 = 1.0 if found + expected == 0 else 2 * common / (found + expected)
    return {"entity_agreement": f1, "token_label_agreement": float(np.concatenate(tokens).mean())}


def qa_metrics(ref: Run, cand: Run, info: ModelInfo) -> dict[str, float]:
    """The fraction of questions answered with exactly the same span."""
    best = [(a[0] if isinstance(a, list) else a for a in pair) for pair in zip(ref.answers, cand.answers)]
    spans = [(r["start"], r["end"]) == (c["start"], c["end"]) for r, c in best]
    return {"exact_span": float(np.mean(spans))}


def fill_mask_metrics(ref: Run, cand: Run, info: ModelInfo) -> dict[str, float]:
    """Same best token, and the overlap of the top-k proposals."""
    top1, overlap = [], []
    for r, c in zip(ref.answers, cand.answers):
        for rm, cm in zip(*(a if a and isinstance(a[0], list) else [a] for a in (r, c))):  # one list per mask
            rt, ct = [e["token"] for e in rm], [e["token"] for e in cm]
            top1.append(rt[0] == ct[0])
            overlap.append(len(set(rt) & set(ct)) / max(len(rt), 1))
    return {"top1_agreement": float(np.mean(top1)), "topk_overlap": float(np.mean(overlap))}


METRICS: dict[str, Callable[[Run, Run, ModelInfo], dict[str, float]]] = {
    "embedding": embedding_metrics,
    "classification": classification_metrics,
    "token-classification": token_metrics,
    "question-answering": qa_metrics,
    "fill-mask": fill_mask_metrics,
}


# ------------------------------------------------------------------------------------------------ gate


@dataclass(frozen=True)
class Verdict:
    """A candidate's metrics against the reference, and every bound it broke."""

    metrics: dict[str, float]
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


class Gate:
    """Holds the validation requests and the reference's results; judges candidates against them."""

    def __init__(self, reference: LoadedModel, examples: list[Example], task: str, budget: float | None = None) -> None:
        self.family, self.answer_task = FAMILIES[task]
        self.budget = DEFAULT_BUDGET[task] if budget is None else budget
        self.model = reference
        self.plans = [self._plan(i, example) for i, example in enumerate(examples)]
        self.reference = self.run(reference.backend)
        measured = METRICS[self.family](self.reference, self.reference, reference.info)  # the metrics this model has
        self.bounds = tuple(b for b in TOLERANCES[self.family] if b.metric in measured)

    def _plan(self, index: int, example: Example) -> Plan:
        try:
            return plan(self.model, example.inputs, example.parameters, self.answer_task)
        except InputError as exc:
            raise ValueError(f"validation example {index + 1} cannot be used for {self.answer_task}: {exc}") from None

    @property
    def limits(self) -> dict[str, str]:
        """Each bound as text, for the report: `min_cosine >= 0.99`."""
        return {b.metric: f"{'>=' if b.at_least else '<='} {b.limit(self.budget):.4f}" for b in self.bounds}

    def run(self, backend: Backend) -> Run:
        """Every request through the backend, each request's features in one padded batch as served."""
        pad_id = self.model.info.tokenizer.pad_token_id or 0
        answers, outputs = [], []
        for request in self.plans:
            features = request.features
            types = [f.token_type_ids for f in features if f.token_type_ids is not None]
            batch = Batch.pad([f.input_ids for f in features], types if len(types) == len(features) else None, pad_id)
            rows = split_outputs(request.task.head, backend.forward(batch), batch.lengths)
            outputs.append(rows)
            answers.append(answer(self.model, request, rows).output)
        return Run(answers, outputs)

    def judge(self, backend: Backend) -> Verdict:
        candidate = self.run(backend)
        metrics = METRICS[self.family](self.reference, candidate, self.model.info)
        failures = [v for b in self.bounds if (v := b.violation(metrics[b.metric], self.budget))]
        return Verdict({k: round(v, 6) for k, v in metrics.items()}, tuple(failures))


class Closable(Protocol):
    def close(self) -> None: ...


R = TypeVar("R", bound=Closable)


def gate_candidate(record: dict[str, Any], build: Callable[[], R], judge: Callable[[R], Verdict],
                   say: Callable[[str], None]) -> R | None:
    """Build a candidate's runner and judge it, filling its report record; the runner only if it passed.

    Shared by every model family: a candidate that cannot be built or run is reported as failed (never fatal
    to the whole optimize), a rejected one lists the bounds it broke, and a runner not kept is closed.
    """
    try:
        return _gated(record, build, judge, say)
    finally:  # the build's transient copies (a graph fused in Python, a quantizer's) leave the resident size
        heap.trim()


def _gated(record: dict[str, Any], build: Callable[[], R], judge: Callable[[R], Verdict],
           say: Callable[[str], None]) -> R | None:
    runner = None
    try:
        runner = build()
        verdict = judge(runner)
    except Exception as exc:  # a recipe that cannot be built or run is reported, not fatal
        record["reasons"] = [f"{type(exc).__name__}: {str(exc).strip()[:300]}"]
        say(f"failed: {record['reasons'][0]}")
        if runner is not None:
            runner.close()
        return None
    record.update(metrics=verdict.metrics, verdict="passed" if verdict.passed else "rejected", reasons=list(verdict.failures))
    say(f"{record['verdict']} ({', '.join(f'{k} {v:.4f}' for k, v in verdict.metrics.items())})")
    if verdict.passed:
        return runner
    runner.close()
    return None
