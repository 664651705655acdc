"""zero-shot-classification: NLI models score candidate labels chosen per request, as the transformers pipeline does.

Each (text, label) pair is one feature: the text as premise, the label in the hypothesis template as
hypothesis. The answer follows today's Inference API, a `[{label, score}, ...]` list sorted by score, rather
than the pipeline's `{sequence, labels, scores}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from squeezer.tasks.base import BaseTask, InputError, ModelInfo, Prepared, parse_params, softmax, text_items
from squeezer.tasks.text_classification import to_feature


def entailment_id(config: Any) -> int | None:
    """The entailment class, found as the pipeline finds it: the first label starting with "entail"."""
    for label, index in (getattr(config, "label2id", None) or {}).items():
        if label.lower().startswith("entail"):
            return int(index)
    return None


def split_labels(labels: Any) -> Any:
    """The pipeline accepts one comma-separated string for several labels."""
    if isinstance(labels, str):
        return [label.strip() for label in labels.split(",") if label.strip()]
    return labels


def check_template(template: str, label: str) -> None:
    """Refuse a template the label cannot be put into, as the pipeline does (it formats the first label)."""
    try:
        filled = template.format(label)
    except (LookupError, ValueError, AttributeError):
        filled = template
    if filled == template:
        raise InputError(f"parameters.hypothesis_template: must contain {{}} where the label goes, got {template!r}")


# Most candidate labels in one request: each is a sequence through the model for every input.
MAX_LABELS = 128


@dataclass(frozen=True)
class ZeroShotParams:
    candidate_labels: list[str] | None = None  # required; None only until parse checks it
    multi_label: bool = False
    hypothesis_template: str = "This example is {}."
    truncate: bool = True


class ZeroShotClassification(BaseTask):
    name: ClassVar[str] = "zero-shot-classification"
    params_type: ClassVar[type] = ZeroShotParams
    head: ClassVar[str] = "sequence-classification"

    def supports(self, info: ModelInfo) -> bool:
        return entailment_id(info.config) is not None

    def claims(self, inputs: Any, parameters: dict[str, Any]) -> bool:
        """Candidate labels make a request zero-shot even on a model whose default is text-classification."""
        return "candidate_labels" in parameters

    def parse(self, inputs: Any, parameters: dict[str, Any]) -> tuple[list[Any], Any, bool]:
        items, batched = text_items(inputs)
        if isinstance(parameters, dict) and "candidate_labels" in parameters:
            parameters = {**parameters, "candidate_labels": split_labels(parameters["candidate_labels"])}
        params = parse_params(self.params_type, parameters)
        if not params.candidate_labels:
            raise InputError("parameters.candidate_labels: required, a list of labels or a comma-separated string")
        if len(params.candidate_labels) > MAX_LABELS:
            raise InputError(f"parameters.candidate_labels: at most {MAX_LABELS} labels, got {len(params.candidate_labels)}")
        check_template(params.hypothesis_template, params.candidate_labels[0])
        return items, params, batched

    def prepare(self, item: str, params: ZeroShotParams, info: ModelInfo) -> Prepared:
        labels = params.candidate_labels or []
        hypotheses = [params.hypothesis_template.format(label) for label in labels]
        encoded = [self._encode(item, hypothesis, info, params.truncate) for hypothesis in hypotheses]
        return Prepared([to_feature(enc) for enc, _ in encoded], any(cut for _, cut in encoded))

    @staticmethod
    def _encode(text: str, hypothesis: str, info: ModelInfo, truncate: bool) -> tuple[Any, bool]:
        """Premise and hypothesis as a pair, cut only_first so the hypothesis is kept whole."""
        try:
            return info.encode(text, hypothesis, truncate=truncate)
        except InputError:
            raise
        except Exception as error:  # tokenizers raises a bare Exception when the premise cannot shrink enough
            if "too short" not in str(error):
                raise
            raise InputError(
                f"parameters.hypothesis_template: the hypothesis {hypothesis[:60]!r} leaves no room for the input "
                f"within this model's {info.max_length} tokens"
            ) from error

    def finish(
        self,
        item: str,
        params: ZeroShotParams,
        prepared: Prepared,
        outputs: list[dict[str, np.ndarray]],
        info: ModelInfo,
    ) -> list[dict[str, Any]]:
        labels = params.candidate_labels or []
        logits = np.stack([out["logits"] for out in outputs])  # [labels, classes]
        entail = entailment_id(info.config)
        if params.multi_label or len(labels) == 1:
            contradiction = -1 if entail == 0 else 0  # each label alone: entailment against contradiction
            scores = softmax(logits[:, [contradiction, entail]])[:, 1]
        else:
            scores = softmax(logits[:, entail])  # the labels compete for entailment
        order = reversed(scores.argsort())  # the pipeline's ranking, ties included
        return [{"label": labels[i], "score": float(scores[i])} for i in order]
