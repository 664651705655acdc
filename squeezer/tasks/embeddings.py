"""feature-extraction and sentence-similarity: embeddings from the base model's hidden states.

A model folder that declares sentence-transformers pooling gets pooled (and, when declared, normalized)
sentence embeddings, as `SentenceTransformer.encode` returns them; any other model gets token embeddings
shaped as the transformers feature-extraction pipeline returns them (`[1, tokens, hidden]` per input).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from squeezer.tasks.base import BaseTask, Feature, InputError, ModelInfo, Pooling, Prepared, param, parse_params, text_items


def pool(hidden: np.ndarray, mode: str) -> np.ndarray:
    """Pool one sequence's token embeddings [tokens, hidden] (padding already removed) into one vector."""
    if mode == "mean":
        return hidden.mean(axis=0)
    if mode == "cls":
        return hidden[0]
    if mode == "max":
        return hidden.max(axis=0)
    if mode == "mean_sqrt_len":
        return hidden.sum(axis=0) / np.sqrt(hidden.shape[0])
    if mode == "lasttoken":
        return hidden[-1]
    raise ValueError(f"unknown pooling mode {mode!r}")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Scale to unit length, with torch.nn.functional.normalize's epsilon."""
    return x / max(float(np.linalg.norm(x)), 1e-12)


def sentence_embedding(hidden: np.ndarray, pooling: Pooling | None, normalize: bool | None) -> np.ndarray:
    """The sentence embedding of one sequence: the model's own pooling, or mean pooling without one."""
    vector = pool(hidden, pooling.mode if pooling else "mean")
    wanted = (pooling.normalize if pooling else False) if normalize is None else normalize
    return l2_normalize(vector) if wanted else vector


def encode_text(text: str, info: ModelInfo, truncate: bool) -> Prepared:
    enc, cut = info.encode(text, truncate=truncate)
    return Prepared([Feature(list(enc["input_ids"]), _types(enc))], cut)


def _types(enc: Any) -> list[int] | None:
    return list(enc["token_type_ids"]) if "token_type_ids" in enc else None


@dataclass(frozen=True)
class EmbeddingParams:
    normalize: bool | None = None  # None: what the model folder declares
    truncate: bool = True
    truncation_direction: str = param("right", choices=("right",))
    prompt_name: str | None = None  # accepted for client compatibility; this server defines no prompts


class FeatureExtraction(BaseTask):
    name: ClassVar[str] = "feature-extraction"
    params_type: ClassVar[type] = EmbeddingParams
    head: ClassVar[str] = "base"

    def parse(self, inputs: Any, parameters: dict[str, Any]) -> tuple[list[Any], Any, bool]:
        items, batched = text_items(inputs)
        return items, parse_params(self.params_type, parameters), batched

    def prepare(self, item: str, params: EmbeddingParams, info: ModelInfo) -> Prepared:
        return encode_text(item, info, params.truncate)

    def finish(
        self,
        item: str,
        params: EmbeddingParams,
        prepared: Prepared,
        outputs: list[dict[str, np.ndarray]],
        info: ModelInfo,
    ) -> Any:
        hidden = outputs[0]["last_hidden_state"]
        if info.pooling is None and params.normalize is None:
            return [hidden.tolist()]  # the pipeline's [1, tokens, hidden]
        return sentence_embedding(hidden, info.pooling, params.normalize).tolist()


@dataclass(frozen=True)
class SimilarityParams:
    truncate: bool = True


class SentenceSimilarity(BaseTask):
    """Cosine similarity of `source_sentence` with each of `sentences`, as the Inference API computes it."""

    name: ClassVar[str] = "sentence-similarity"
    params_type: ClassVar[type] = SimilarityParams
    head: ClassVar[str] = "base"

    def claims(self, inputs: Any, parameters: dict[str, Any]) -> bool:
        return isinstance(inputs, dict) and "source_sentence" in inputs

    def parse(self, inputs: Any, parameters: dict[str, Any]) -> tuple[list[Any], Any, bool]:
        if not isinstance(inputs, dict):
            raise InputError("inputs: expected an object with source_sentence and sentences")
        source = inputs.get("source_sentence")
        if not isinstance(source, str) or not source.strip():
            raise InputError("inputs.source_sentence: must be a non-empty string")
        sentences = inputs.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise InputError("inputs.sentences: must be a non-empty list of strings")
        for i, text in enumerate(sentences):
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"inputs.sentences[{i}]: must be a non-empty string")
        return [[source, *sentences]], parse_params(self.params_type, parameters), False

    def prepare(self, item: list[str], params: SimilarityParams, info: ModelInfo) -> Prepared:
        parts = [encode_text(text, info, params.truncate) for text in item]
        return Prepared([p.features[0] for p in parts], any(p.truncated for p in parts))

    def finish(
        self,
        item: list[str],
        params: SimilarityParams,
        prepared: Prepared,
        outputs: list[dict[str, np.ndarray]],
        info: ModelInfo,
    ) -> Any:
        vectors = [l2_normalize(sentence_embedding(o["last_hidden_state"], info.pooling, None)) for o in outputs]
        source = vectors[0]
        return [float(np.dot(source, other)) for other in vectors[1:]]
