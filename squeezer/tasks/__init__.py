"""The task table: every task the server knows, by its Hugging Face name.

Tasks are chosen by looking them up here, never by if/elif chains; a new task is a new module plus a line.
"""

from __future__ import annotations

from squeezer.tasks.base import InputError, ModelInfo, Pooling, Task
from squeezer.tasks.embeddings import FeatureExtraction, SentenceSimilarity
from squeezer.tasks.fill_mask import FillMask
from squeezer.tasks.question_answering import QuestionAnswering
from squeezer.tasks.seq2seq import SEQ2SEQ_TASKS
from squeezer.tasks.text_classification import TextClassification
from squeezer.tasks.token_classification import TokenClassification
from squeezer.tasks.zero_shot import ZeroShotClassification

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        FeatureExtraction(),
        SentenceSimilarity(),
        TextClassification(),
        ZeroShotClassification(),
        FillMask(),
        TokenClassification(),
        QuestionAnswering(),
    )
}

# Tasks served by the decode loop (squeezer.scheduling.decoding) rather than by one forward pass per input.
GENERATION_TASKS: tuple[str, ...] = ("text-generation",)
# Encoder-decoder tasks (squeezer.tasks.seq2seq), run by `generate` one request at a time.
ALL_TASKS: tuple[str, ...] = (*TASKS, *GENERATION_TASKS, *SEQ2SEQ_TASKS)

__all__ = ["ALL_TASKS", "GENERATION_TASKS", "SEQ2SEQ_TASKS", "TASKS", "InputError", "ModelInfo", "Pooling", "Task"]
