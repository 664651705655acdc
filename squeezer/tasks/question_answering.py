"""question-answering: extract the span of a context that answers a question.

A numpy port of transformers 4.57 `QuestionAnsweringPipeline` with a fast tokenizer: long contexts are
split into overlapping features exactly as its `preprocess` does, and `select_starts_ends`/`decode_spans`
are kept line for line (including their quirks), so scores, offsets and order match the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from squeezer.tasks.base import BaseTask, Feature, InputError, ModelInfo, Prepared, param, parse_params, positive

NO_NULL_SCORE = 1000000  # the pipeline's "large and positive" start for the best empty-answer score
# Most features one question may split its context into: a small stride over a long context would otherwise
# become tens of thousands of windows (tokenized, held and queued) from one request under the payload limit.
MAX_WINDOWS = 256


@dataclass(frozen=True)
class QuestionAnsweringParams:
    top_k: int = param(1, **positive())
    doc_stride: int | None = param(None, bounds={"minimum": 0}, rule="must be a non-negative integer")
    max_answer_len: int = param(15, **positive())
    max_seq_len: int | None = param(None, **positive())
    # Accepted for client compatibility; the pipeline's fast-tokenizer path never uses it either.
    max_question_len: int = param(64, **positive())
    handle_impossible_answer: bool = False
    align_to_words: bool = True


@dataclass(frozen=True)
class Question:
    question: str
    context: str


@dataclass(frozen=True)
class Window:
    """How the context is cut into features: tokens per feature and tokens shared by neighbours."""

    max_seq_len: int
    doc_stride: int


@dataclass(frozen=True)
class Span:
    """What post-processing needs for one feature (kept in `Feature.meta["span"]`)."""

    encoding: Any  # the tokenizers.Encoding, for token -> word -> character mapping
    p_mask: np.ndarray  # [1, tokens]; 1 where a token cannot be part of an answer


@dataclass(frozen=True)
class Candidates:
    """One feature's best spans, as token indices, with their scores."""

    starts: np.ndarray
    ends: np.ndarray
    scores: np.ndarray
    min_null_score: float


def question_item(raw: Any, where: str) -> Question:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected an object with question and context, got {type(raw).__name__}")
    values: dict[str, str] = {}
    for key in ("question", "context"):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{where}.{key}: must be a non-empty string")
        values[key] = value
    return Question(**values)


def window(params: QuestionAnsweringParams, info: ModelInfo) -> Window:
    """The pipeline's defaults (384 tokens capped at the model's, half of it as stride up to 128).

    An explicit `max_seq_len` is also capped at the model's length, where the pipeline would overrun it.
    """
    max_seq_len = min(params.max_seq_len or 384, info.max_length)
    doc_stride = min(max_seq_len // 2, 128) if params.doc_stride is None else params.doc_stride
    if doc_stride > max_seq_len:
        raise InputError(f"parameters.doc_stride: ({doc_stride}) is larger than max_seq_len ({max_seq_len})")
    room = max_seq_len - info.tokenizer.num_special_tokens_to_add(pair=False)
    if doc_stride > room:  # the tokenizer refuses this whatever the input's length
        raise InputError(
            f"parameters.doc_stride: must be at most {room} with max_seq_len {max_seq_len}, got {doc_stride}"
        )
    return Window(max_seq_len, doc_stride)


def check_room(item: Question, win: Window, tokenizer: Any) -> None:
    """Refuse inputs the tokenizer would fail (or panic) on when it has to split the context."""
    question = len(tokenizer(item.question, add_special_tokens=False)["input_ids"])
    context = len(tokenizer(item.context, add_special_tokens=False)["input_ids"])
    room = win.max_seq_len - tokenizer.num_special_tokens_to_add(pair=True) - question
    if context <= room:  # fits in one feature: nothing is split, so nothing can fail
        return
    if room <= 0:
        raise InputError(
            f"inputs.question: {question} tokens leave no room for the context within {win.max_seq_len} tokens"
        )
    if win.doc_stride >= room:
        raise InputError(
            f"parameters.doc_stride: must be less than the {room} context tokens that fit beside the question, "
            f"got {win.doc_stride}"
        )
    windows = 1 + -(-(context - room) // (room - win.doc_stride))  # each next window starts room - stride later
    if windows > MAX_WINDOWS:
        raise InputError(
            f"parameters.doc_stride: a stride of {win.doc_stride} splits this context into {windows} windows, "
            f"more than the {MAX_WINDOWS} allowed; use a smaller stride or a shorter context"
        )


def span_feature(enc: Any, index: int, question_first: bool, tokenizer: Any) -> Feature:
    """One feature: context tokens may answer; question and special tokens may not, except [CLS]."""
    ids = enc["input_ids"][index]
    p_mask = np.array([[int(seq != 1) if question_first else 0 for seq in enc.sequence_ids(index)]])
    if tokenizer.cls_token_id is not None:
        p_mask[0, np.array(ids) == tokenizer.cls_token_id] = 0
    types = enc["token_type_ids"][index] if "token_type_ids" in tokenizer.model_input_names else None
    return Feature(list(ids), types, {"span": Span(enc[index], p_mask)})


def select_starts_ends(start: np.ndarray, end: np.ndarray, p_mask: np.ndarray, min_null_score: float,
                       top_k: int, handle_impossible_answer: bool, max_answer_len: int) -> Candidates:
    """The pipeline's `select_starts_ends`: softmax over context tokens, null score, then decode_spans."""
    undesired_tokens = np.abs(p_mask - 1)
    undesired_tokens_mask = undesired_tokens == 0.0
    start = np.where(undesired_tokens_mask, -10000.0, start)
    end = np.where(undesired_tokens_mask, -10000.0, end)
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    if handle_impossible_answer:
        min_null_score = min(min_null_score, (start[0, 0] * end[0, 0]).item())
    start[0, 0] = end[0, 0] = 0.0
    starts, ends, scores = decode_spans(start, end, top_k, max_answer_len, undesired_tokens)
    return Candidates(starts, ends, scores, min_null_score)


def decode_spans(start: np.ndarray, end: np.ndarray, topk: int, max_answer_len: int,
                 undesired_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pipeline's `decode_spans`, kept verbatim: start*end scores of spans up to max_answer_len tokens.

    Like the pipeline, the allowed-token test uses both axes of `undesired_tokens.nonzero()`, so index 0
    ([CLS], scored 0) stays a possible boundary; keeping that quirk keeps the answer lists identical.
    """
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    scores_flat = candidates.flatten()
    if topk == 1:
        idx_sort = [np.argmax(scores_flat)]
    elif len(scores_flat) < topk:
        idx_sort = np.argsort(-scores_flat)
    else:
        idx = np.argpartition(-scores_flat, topk)[0:topk]
        idx_sort = idx[np.argsort(-scores_flat[idx])]
    starts, ends = np.unravel_index(idx_sort, candidates.shape)[1:]
    desired_spans = np.isin(starts, undesired_tokens.nonzero()) & np.isin(ends, undesired_tokens.nonzero())
    starts = starts[desired_spans]
    ends = ends[desired_spans]
    return starts, ends, candidates[0, starts, ends]


def char_span(enc: Any, s: int, e: int, sequence_index: int, align_to_words: bool) -> tuple[int, int]:
    """Context characters of tokens s..e, widened to whole words when asked and the tokenizer knows words."""
    if align_to_words:
        try:
            start_word, end_word = enc.token_to_word(s), enc.token_to_word(e)
            return (enc.word_to_chars(start_word, sequence_index=sequence_index)[0],
                    enc.word_to_chars(end_word, sequence_index=sequence_index)[1])
        except Exception:  # the pipeline's fallback: tokenizers without words, or a span on a special token
            pass
    return enc.offsets[s][0], enc.offsets[e][1]


def add_answer(answers: list[dict[str, Any]], context: str, start: int, end: int, score: float) -> None:
    """Record a span; the same text found again (any case, any feature) adds its score to the first one."""
    text = context[start:end]
    for answer in answers:
        if answer["answer"].lower() == text.lower():
            answer["score"] += score
            return
    answers.append({"score": score, "start": start, "end": end, "answer": text})


class QuestionAnswering(BaseTask):
    name: ClassVar[str] = "question-answering"
    params_type: ClassVar[type] = QuestionAnsweringParams
    head: ClassVar[str] = "question-answering"

    def parse(self, inputs: Any, parameters: dict[str, Any]) -> tuple[list[Any], Any, bool]:
        params = parse_params(self.params_type, parameters)
        if isinstance(inputs, dict):
            return [question_item(inputs, "inputs")], params, False
        if isinstance(inputs, list) and inputs:
            return [question_item(raw, f"inputs[{i}]") for i, raw in enumerate(inputs)], params, True
        raise InputError("inputs: expected an object with question and context, or a non-empty list of them")

    def prepare(self, item: Question, params: QuestionAnsweringParams, info: ModelInfo) -> Prepared:
        tokenizer = info.tokenizer
        win = window(params, info)
        check_room(item, win, tokenizer)
        question_first = tokenizer.padding_side == "right"
        enc = tokenizer(
            text=item.question if question_first else item.context,
            text_pair=item.context if question_first else item.question,
            truncation="only_second" if question_first else "only_first",
            max_length=win.max_seq_len,
            stride=win.doc_stride,
            return_token_type_ids=True,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        features = [span_feature(enc, i, question_first, tokenizer) for i in range(len(enc["input_ids"]))]
        return Prepared(features, False)

    def finish(
        self,
        item: Question,
        params: QuestionAnsweringParams,
        prepared: Prepared,
        outputs: list[dict[str, np.ndarray]],
        info: ModelInfo,
    ) -> Any:
        sequence_index = 1 if info.tokenizer.padding_side == "right" else 0
        pre_topk = params.top_k * 2 + 10 if params.align_to_words else params.top_k  # alignment merges some
        min_null_score: float = NO_NULL_SCORE
        answers: list[dict[str, Any]] = []
        for feature, output in zip(prepared.features, outputs):
            span: Span = feature.meta["span"]
            found = select_starts_ends(
                np.asarray(output["start_logits"], dtype=np.float32)[None],
                np.asarray(output["end_logits"], dtype=np.float32)[None],
                span.p_mask, min_null_score, pre_topk, params.handle_impossible_answer, params.max_answer_len,
            )
            min_null_score = found.min_null_score
            for s, e, score in zip(found.starts, found.ends, found.scores):
                start, end = char_span(span.encoding, int(s), int(e), sequence_index, params.align_to_words)
                add_answer(answers, item.context, start, end, score.item())
        if params.handle_impossible_answer:
            answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[: params.top_k]
        return answers[0] if len(answers) == 1 else answers
