"""token-classification (NER): a label per token, optionally grouped into entities.

A numpy port of transformers 4.57 `TokenClassificationPipeline` (gather_pre_entities, aggregate,
aggregate_words, group_entities, aggregate_overlapping_entities), so answers match the pipeline's keys,
values, order and character offsets. The default `aggregation_strategy` is "simple", as the Hugging Face
Inference API's is; the pipeline's own default is "none".
"""

from __future__ import annotations

import dataclasses
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
    softmax,
    text_items,
)

AGGREGATIONS = ("none", "simple", "first", "average", "max")
WORD_AGGREGATIONS = ("first", "average", "max")


@dataclass(frozen=True)
class TokenClassificationParams:
    aggregation_strategy: str = param("simple", choices=AGGREGATIONS)
    ignore_labels: tuple[str, ...] = ("O",)  # see `parse_ignore_labels`: an empty list is meaningful
    stride: int | None = param(None, bounds={"minimum": 0}, rule="must be a non-negative integer")
    truncate: bool = True


@dataclass(frozen=True)
class Chunk:
    """What post-processing needs from the tokenizer for one feature (kept in `Feature.meta["chunk"]`)."""

    offsets: list[tuple[int, int]]
    special: list[int]  # 1 for special tokens, which never become entities


@dataclass
class Token:
    """The pipeline's "pre-entity": one non-special token with its label probabilities."""

    word: str
    scores: np.ndarray
    start: int
    end: int
    index: int
    is_subword: bool


@dataclass
class Tagged:
    """A token (or, for word strategies, a word) with its best label: the pipeline's ungrouped entity."""

    entity: str
    score: np.floating
    word: str
    start: int
    end: int
    index: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"entity": self.entity, "score": float(self.score), "index": self.index, "word": self.word,
                "start": self.start, "end": self.end}


@dataclass
class Group:
    """Adjacent tags of the same entity type merged into one entity."""

    entity_group: str
    score: np.floating
    word: str
    start: int
    end: int

    def as_json(self) -> dict[str, Any]:
        return {"entity_group": self.entity_group, "score": float(self.score), "word": self.word,
                "start": self.start, "end": self.end}


def parse_ignore_labels(raw: Any) -> tuple[str, ...]:
    """Validate `ignore_labels`; unlike other list parameters, `[]` is allowed and keeps every label."""
    if raw is None:
        return ("O",)
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(label, str) for label in raw):
        raise InputError("parameters.ignore_labels: expected a list of strings")
    return tuple(raw)


def check_stride(params: TokenClassificationParams, info: ModelInfo) -> None:
    """Refuse what the pipeline refuses, and strides the tokenizer would fail on, before tokenizing."""
    if params.stride is None:
        return
    room = info.max_length - info.tokenizer.num_special_tokens_to_add(pair=False)
    if params.stride >= room:
        raise InputError(
            f"parameters.stride: must be less than {room} (this model's {info.max_length} tokens "
            f"less its special tokens), got {params.stride}"
        )
    if params.aggregation_strategy == "none":
        raise InputError('parameters.stride: needs an aggregation_strategy other than "none" to merge the chunks')


def chunked(text: str, stride: int, info: ModelInfo) -> Prepared:
    """Cover a long text with overlapping chunks, as the pipeline does when given a stride."""
    enc = info.tokenizer(text, truncation=True, max_length=info.max_length, stride=stride,
                         return_overflowing_tokens=True, return_special_tokens_mask=True, return_offsets_mapping=True)
    features = [
        _feature(enc["input_ids"][i], enc["token_type_ids"][i] if "token_type_ids" in enc else None,
                 enc["offset_mapping"][i], enc["special_tokens_mask"][i])
        for i in range(len(enc["input_ids"]))
    ]
    return Prepared(features, False)


def _feature(ids: list[int], types: list[int] | None, offsets: list[tuple[int, int]], special: list[int]) -> Feature:
    chunk = Chunk([(int(s), int(e)) for s, e in offsets], list(special))
    return Feature(list(ids), list(types) if types is not None else None, {"chunk": chunk})


def gather_tokens(text: str, feature: Feature, scores: np.ndarray, tokenizer: Any) -> list[Token]:
    """Non-special tokens with their text span and whether they continue the previous word."""
    chunk: Chunk = feature.meta["chunk"]
    word_aware = bool(getattr(tokenizer.backend_tokenizer.model, "continuing_subword_prefix", None))
    tokens = []
    for idx, token_scores in enumerate(scores):
        if chunk.special[idx]:
            continue
        token_id = feature.input_ids[idx]
        word = tokenizer.convert_ids_to_tokens(token_id)
        start, end = chunk.offsets[idx]
        word_ref = text[start:end]
        if word_aware:
            is_subword = len(word) != len(word_ref)
        else:  # the pipeline's fallback heuristic for tokenizers without a subword prefix
            is_subword = start > 0 and " " not in text[start - 1 : start + 1]
        if token_id == tokenizer.unk_token_id:
            word, is_subword = word_ref, False
        tokens.append(Token(word, token_scores, start, end, idx, is_subword))
    return tokens


def tag_tokens(tokens: list[Token], id2label: dict[int, str]) -> list[Tagged]:
    tagged = []
    for token in tokens:
        best = int(token.scores.argmax())
        tagged.append(Tagged(id2label[best], token.scores[best], token.word, token.start, token.end, token.index))
    return tagged


def tag_word(tokens: list[Token], strategy: str, id2label: dict[int, str], tokenizer: Any) -> Tagged:
    """One word's label from its subword tokens: the first token's, the most confident one's, or the mean."""
    if strategy == "first":
        scores = tokens[0].scores
    elif strategy == "max":
        scores = max(tokens, key=lambda token: token.scores.max()).scores
    else:
        scores = np.nanmean(np.stack([token.scores for token in tokens]), axis=0)
    best = int(scores.argmax())
    word = tokenizer.convert_tokens_to_string([token.word for token in tokens])
    return Tagged(id2label[best], scores[best], word, tokens[0].start, tokens[-1].end)


def tag_words(tokens: list[Token], strategy: str, id2label: dict[int, str], tokenizer: Any) -> list[Tagged]:
    """Force agreement on word boundaries: each word's subword tokens get one label."""
    words: list[list[Token]] = []
    for token in tokens:
        if words and token.is_subword:
            words[-1].append(token)
        else:
            words.append([token])
    return [tag_word(group, strategy, id2label, tokenizer) for group in words]


def split_tag(entity: str) -> tuple[str, str]:
    """("B" or "I", type) of a label; labels outside the B-/I- scheme count as continuations."""
    if entity.startswith(("B-", "I-")):
        return entity[0], entity[2:]
    return "I", entity


def merge_group(tags: list[Tagged], tokenizer: Any) -> Group:
    score = np.mean(np.nanmean([tag.score for tag in tags]))
    word = tokenizer.convert_tokens_to_string([tag.word for tag in tags])
    return Group(tags[0].entity.split("-", 1)[-1], score, word, tags[0].start, tags[-1].end)


def group_tags(tags: list[Tagged], tokenizer: Any) -> list[Group]:
    """Merge adjacent tags of the same type, starting a new entity at every B- tag."""
    groups: list[Group] = []
    current: list[Tagged] = []
    for tag in tags:
        bi, kind = split_tag(tag.entity)
        if current and (kind != split_tag(current[-1].entity)[1] or bi == "B"):
            groups.append(merge_group(current, tokenizer))
            current = []
        current.append(tag)
    if current:
        groups.append(merge_group(current, tokenizer))
    return groups


def merge_overlapping(entities: list[Tagged | Group]) -> list[Tagged | Group]:
    """Across strided chunks, keep the longer (then the more confident) of entities that overlap."""
    if not entities:
        return entities
    ordered = sorted(entities, key=lambda entity: entity.start)
    kept: list[Tagged | Group] = []
    previous = ordered[0]
    for entity in ordered:
        if previous.start <= entity.start < previous.end:
            length, previous_length = entity.end - entity.start, previous.end - previous.start
            if length > previous_length or (length == previous_length and entity.score > previous.score):
                previous = entity
        else:
            kept.append(previous)
            previous = entity
    kept.append(previous)
    return kept


class TokenClassification(BaseTask):
    name: ClassVar[str] = "token-classification"
    params_type: ClassVar[type] = TokenClassificationParams
    head: ClassVar[str] = "token-classification"

    def parse(self, inputs: Any, parameters: dict[str, Any]) -> tuple[list[Any], Any, bool]:
        items, batched = text_items(inputs)
        rest = {k: v for k, v in parameters.items() if k != "ignore_labels"}
        params = parse_params(self.params_type, rest)
        params = dataclasses.replace(params, ignore_labels=parse_ignore_labels(parameters.get("ignore_labels")))
        return items, params, batched

    def prepare(self, item: str, params: TokenClassificationParams, info: ModelInfo) -> Prepared:
        check_stride(params, info)
        if params.stride is not None:
            return chunked(item, params.stride, info)
        enc, cut = info.encode(item, truncate=params.truncate, return_special_tokens_mask=True,
                               return_offsets_mapping=True)
        types = enc["token_type_ids"] if "token_type_ids" in enc else None
        return Prepared([_feature(enc["input_ids"], types, enc["offset_mapping"], enc["special_tokens_mask"])], cut)

    def finish(
        self,
        item: str,
        params: TokenClassificationParams,
        prepared: Prepared,
        outputs: list[dict[str, np.ndarray]],
        info: ModelInfo,
    ) -> Any:
        features = prepared.features
        entities: list[Tagged | Group] = []
        for feature, output in zip(features, outputs):
            found = self.entities(item, feature, softmax(output["logits"]), params.aggregation_strategy, info)
            entities += [e for e in found if _label(e) not in params.ignore_labels]
        if len(features) > 1:
            entities = merge_overlapping(entities)
        return [entity.as_json() for entity in entities]

    def entities(
        self, text: str, feature: Feature, scores: np.ndarray, strategy: str, info: ModelInfo
    ) -> list[Tagged] | list[Group]:
        """One feature's entities, before `ignore_labels`: tags for "none", groups otherwise."""
        id2label = {int(k): v for k, v in info.config.id2label.items()}
        tokens = gather_tokens(text, feature, scores, info.tokenizer)
        if strategy in WORD_AGGREGATIONS:
            tags = tag_words(tokens, strategy, id2label, info.tokenizer)
        else:
            tags = tag_tokens(tokens, id2label)
        return tags if strategy == "none" else group_tags(tags, info.tokenizer)


def _label(entity: Tagged | Group) -> str:
    return entity.entity if isinstance(entity, Tagged) else entity.entity_group
