"""text-classification: one label distribution per text (or text pair), ported from the transformers pipeline.

The Inference API answers every label sorted by score, nested one level deeper than the pipeline
(`[[{label, score}, ...]]` for one text), which is what InferenceClient.text_classification unwraps.
Pairs (`{"text", "text_pair"}`, as the pipeline accepts them) serve cross-encoders such as rerankers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from squeezer.tasks.base import (
    BaseTask,
    Feature,
    InputError,
    ModelInfo,
    Prepared,
    param,
    parse_params,
    positive,
    sigmoid,
    softmax,
)

TextInput = tuple[str, str | None]  # a text and its optional pair

FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": sigmoid,
    "softmax": softmax,
    "none": lambda logits: logits,
}


def to_feature(enc: Any) -> Feature:
    """A tokenizer encoding as a model feature; segment ids only for tokenizers that produce them."""
    types = list(enc["token_type_ids"]) if "token_type_ids" in enc else None
    return Feature(list(enc["input_ids"]), types)


def default_function(config: Any) -> str:
    """The score function the pipeline picks when the request names none, from the model's config."""
    if config.problem_type == "regression":
        return "none"
    if config.problem_type == "multi_label_classification" or config.num_labels == 1:
        return "sigmoid"
    if config.problem_type == "single_label_classification" or config.num_labels > 1:
        return "softmax"
    return "none"


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{name}: must be a non-empty string")
    return value


def _item(name: str, value: Any) -> TextInput:
    """One input: a string, or the pipeline's `{"text": ..., "text_pair": ...}` object."""
    if isinstance(value, str):
        return _text(name, value), None
    if not isinstance(value, dict):
        raise InputError(f"{name}: expected a string or an object with text and text_pair, got {type(value).__name__}")
    unknown = sorted(set(value) - {"text", "text_pair"})
    if unknown:
        raise InputError(f"{name}: unknown keys {', '.join(unknown)}; expected text and optionally text_pair")
    pair = value.get("text_pair")
    return _text(f"{name}.text", value.get("text")), None if pair is None else _text(f"{name}.text_pair", pair)


def classification_items(inputs: Any) -> tuple[list[TextInput], bool]:
    """Validate a string, a text pair object, or a non-empty list of those."""
    if isinstance(inputs, list):
        if not inputs:
            raise InputError("inputs: must not be an empty list")
        return [_item(f"inputs[{i}]", value) for i, value in enumerate(inputs)], True
    return [_item("inputs", inputs)], False


def encode_item(item: TextInput, info: ModelInfo, truncate: bool) -> tuple[Any, bool]:
    """Tokenize like the pipeline called with truncation=True, which cuts a pair longest_first.

    `info.encode` cuts pairs only_first (right for zero-shot's short hypotheses), so an over-long pair
    is re-tokenized here rather than sent through it.
    """
    text, pair = item
    if pair is None or not truncate:
        return info.encode(text, pair, truncate=truncate)
    enc = info.tokenizer(text, pair, truncation=False)
    if len(enc["input_ids"]) <= info.max_length:
        return enc, False
    return info.tokenizer(text, pair, truncation="longest_first", max_length=info.max_length), True


@dataclass(frozen=True)
class ClassificationParams:
    top_k: int | None = param(None, **positive())  # None: every label, as the Inference API answers
    function_to_apply: str | None = param(None, choices=tuple(FUNCTIONS))  # None: the model's default
    truncate: bool = True


class TextClassification(BaseTask):
    name: ClassVar[str] = "text-classification"
    params_type: ClassVar[type] = ClassificationParams
    head: ClassVar[str] = "sequence-classification"

    def parse(self, inputs: Any, parameters: dict[str, Any]) -> tuple[list[Any], Any, bool]:
        items, batched = classification_items(inputs)
        return items, parse_params(self.params_type, parameters), batched

    def prepare(self, item: TextInput, params: ClassificationParams, info: ModelInfo) -> Prepared:
        enc, cut = encode_item(item, info, params.truncate)
        return Prepared([to_feature(enc)], cut)

    def finish(
        self,
        item: TextInput,
        params: ClassificationParams,
        prepared: Prepared,
        outputs: list[dict[str, np.ndarray]],
        info: ModelInfo,
    ) -> list[dict[str, Any]]:
        function = params.function_to_apply or default_function(info.config)
        scores = FUNCTIONS[function](outputs[0]["logits"])
        ranked = [{"label": info.config.id2label[i], "score": float(score)} for i, score in enumerate(scores)]
        ranked.sort(key=lambda entry: entry["score"], reverse=True)  # stable, as the pipeline's sort
        return ranked[: params.top_k]

    def combine(self, results: list[Any], batched: bool) -> Any:
        """One list per input, even for a single input: the Inference API's `[[...]]` shape."""
        return results
