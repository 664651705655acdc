"""One request's way through a task, around the forward pass: pick the task, parse, tokenize, answer.

Split in two halves (`plan` before the model runs, `answer` after) so the encoder runtime can hand the features
to a scheduler in between, and tests can run the same halves around a direct backend call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from squeezer.loading import LoadedModel
from squeezer.tasks import ALL_TASKS, TASKS, InputError, Task
from squeezer.tasks.base import Feature, Prepared


@dataclass
class Plan:
    """A parsed, tokenized request waiting for its model outputs."""

    task: Task
    items: list[Any]
    params: Any
    batched: bool
    prepared: list[Prepared]

    @property
    def features(self) -> list[Feature]:
        return [f for p in self.prepared for f in p.features]

    @property
    def truncated(self) -> bool:
        return any(p.truncated for p in self.prepared)

    @property
    def n_tokens(self) -> int:
        return sum(p.n_tokens for p in self.prepared)


@dataclass(frozen=True)
class Answer:
    """The JSON-ready result of a request, and facts about it for response headers."""

    output: Any
    task: str
    truncated: bool
    n_tokens: int


def pick_task(model: LoadedModel, inputs: Any, parameters: dict[str, Any], task_name: str | None) -> Task:
    """The task named by the route, else one the request's shape claims, else the model's default."""
    candidates = model.tasks()
    if task_name is not None:
        if task_name not in ALL_TASKS:
            raise InputError(f"unknown task {task_name!r}; known tasks: {', '.join(sorted(ALL_TASKS))}", status=404)
        if task_name not in TASKS or TASKS[task_name] not in candidates:  # a generation task, or another head's
            names = ", ".join(t.name for t in candidates)
            raise InputError(f"model {model.model_id} cannot serve {task_name}; it serves: {names}", status=400)
        return TASKS[task_name]
    for task in candidates:
        if task is not model.task and task.claims(inputs, parameters):
            return task
    return model.task


def plan(model: LoadedModel, inputs: Any, parameters: Any, task_name: str | None = None) -> Plan:
    """Validate and tokenize a request; raises InputError with the offending field."""
    if parameters is not None and not isinstance(parameters, dict):
        raise InputError(f"parameters: expected an object, got {type(parameters).__name__}")
    parameters = parameters or {}
    task = pick_task(model, inputs, parameters, task_name)
    items, params, batched = task.parse(inputs, parameters)
    prepared = [task.prepare(item, params, model.info) for item in items]
    return Plan(task, items, params, batched, prepared)


def answer(model: LoadedModel, request: Plan, outputs: list[dict[str, np.ndarray]]) -> Answer:
    """Post-process each item's share of the outputs (in feature order) and shape the response."""
    results, start = [], 0
    for item, prep in zip(request.items, request.prepared):
        share = outputs[start : start + len(prep.features)]
        start += len(prep.features)
        results.append(request.task.finish(item, request.params, prep, share, model.info))
    return Answer(request.task.combine(results, request.batched), request.task.name, request.truncated, request.n_tokens)
