"""fill-mask: the likeliest tokens for each mask token in a text, ported from the transformers pipeline.

A text with one mask answers a list of proposals; with several masks, one list per mask (the pipeline's
experimental multi-mask form, whose scores are per position, not joint).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from squeezer.tasks.base import (
    BaseTask,
    InputError,
    ModelInfo,
    Prepared,
    param,
    parse_params,
    positive,
    softmax,
    text_items,
)
from squeezer.tasks.embeddings import encode_text


def target_ids(targets: list[str], tokenizer: Any) -> np.ndarray:
    """Vocabulary ids for `targets`, as the pipeline resolves them.

    A target that is not a vocabulary token stands for the first token it tokenizes to, and one that
    tokenizes to nothing is dropped; duplicates count once.
    """
    ids: list[int] = []
    for target in targets:
        token_id = tokenizer.backend_tokenizer.token_to_id(target)
        if token_id is None:
            pieces = tokenizer(target, add_special_tokens=False, max_length=1, truncation=True)["input_ids"]
            if not pieces:
                continue
            token_id = pieces[0]
        ids.append(token_id)
    if not ids:
        raise InputError("parameters.targets: none of the targets maps to a token of this model's vocabulary")
    return np.array(list(dict.fromkeys(ids)))


def top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k largest values, largest first, without sorting the whole vocabulary."""
    k = min(k, probs.shape[-1])
    best = np.argpartition(-probs, k - 1, axis=-1)[:, :k]
    order = np.argsort(-np.take_along_axis(probs, best, axis=-1), axis=-1, kind="stable")
    return np.take_along_axis(best, order, axis=-1)


def _preview(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


@dataclass(frozen=True)
class FillMaskParams:
    top_k: int = param(5, **positive())
    targets: list[str] | None = None  # None: the whole vocabulary
    truncate: bool = True


class FillMask(BaseTask):
    name: ClassVar[str] = "fill-mask"
    params_type: ClassVar[type] = FillMaskParams
    head: ClassVar[str] = "masked-lm"

    def supports(self, info: ModelInfo) -> bool:
        return info.tokenizer.mask_token_id is not None

    def parse(self, inputs: Any, parameters: dict[str, Any]) -> tuple[list[Any], Any, bool]:
        items, batched = text_items(inputs)
        return items, parse_params(self.params_type, parameters), batched

    def prepare(self, item: str, params: FillMaskParams, info: ModelInfo) -> Prepared:
        """Tokenize, and refuse before the forward pass a text with no mask left or targets that map to nothing.

        The feature's meta keeps the mask positions and the target ids (None: the whole vocabulary) for `finish`.
        """
        prepared = encode_text(item, info, params.truncate)
        feature = prepared.features[0]
        positions = np.flatnonzero(np.array(feature.input_ids) == info.tokenizer.mask_token_id)
        if not len(positions):
            where = f" within its first {info.max_length} tokens" if prepared.truncated else ""
            mask = info.tokenizer.mask_token
            raise InputError(f"inputs: must contain the mask token {mask}{where}, got {_preview(item)}")
        targets = target_ids(params.targets, info.tokenizer) if params.targets is not None else None
        feature.meta.update(masks=positions, targets=targets)
        return prepared

    def finish(
        self,
        item: str,
        params: FillMaskParams,
        prepared: Prepared,
        outputs: list[dict[str, np.ndarray]],
        info: ModelInfo,
    ) -> Any:
        """Rank tokens at each mask, among the targets when the request names some."""
        tokenizer = info.tokenizer
        feature = prepared.features[0]
        ids = np.array(feature.input_ids)
        positions, candidates = feature.meta["masks"], feature.meta["targets"]
        probs = softmax(outputs[0]["logits"][positions])  # [masks, vocab]
        if candidates is None:
            candidates = np.arange(probs.shape[-1])
        probs = probs[:, candidates]
        top = top_k(probs, params.top_k)
        single = len(positions) == 1
        rows = [
            [self._proposal(ids, position, int(candidates[c]), float(probs[m, c]), tokenizer, single) for c in top[m]]
            for m, position in enumerate(positions)
        ]
        return rows[0] if single else rows

    @staticmethod
    def _proposal(
        ids: np.ndarray, position: int, token: int, score: float, tokenizer: Any, single: bool
    ) -> dict[str, Any]:
        """One filled-in text; other masks stay visible when there are several, as in the pipeline."""
        filled = ids.copy()
        filled[position] = token
        kept = [int(t) for t in filled if t != tokenizer.pad_token_id]
        return {
            "score": score,
            "token": token,
            "token_str": tokenizer.decode([token]),
            "sequence": tokenizer.decode(kept, skip_special_tokens=single),
        }
