"""Each rung's answers to the first requests of a workload, and how well they agree with the reference rung's
(out of the box): the ladder is only worth climbing if the answers stay the same."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import numpy as np

from squeezer.benchmark.streams import ask
from squeezer.benchmark.workloads import Workload


def collect(url: str, workload: Workload, bodies: list[dict[str, Any]], path: str | None = None) -> list[Any]:
    """The answers to `bodies`, one request at a time, posted to `path` (a peer's route; default the workload's);
    a failed request answers None."""
    path = path or workload.path
    if workload.generates:
        return asyncio.run(_chats(url, path, bodies))
    with httpx.Client(base_url=url, timeout=600) as http:
        return [r.json() if r.status_code == 200 else None for r in (http.post(path, json=b) for b in bodies)]


async def _chats(url: str, path: str, bodies: list[dict[str, Any]]) -> list[str | None]:
    async with httpx.AsyncClient(base_url=url, timeout=3600) as http:
        return [a.text if a else None for a in [await ask(http, path, b) for b in bodies]]


def agreement(workload: Workload, answers: list[Any], reference: list[Any]) -> float | None:
    """One figure per rung: minimum cosine (vectors), the share of equal top labels (labels) or identical greedy
    answers (text), or the share of answers that are valid against the schema whatever the reference (json)."""
    if workload.answer == "json":
        return sum(_fits(a, workload.schema or {}) for a in answers) / len(answers)
    if any(a is None for a in answers) or any(r is None for r in reference):
        return None
    if workload.answer == "vectors":
        return min_cosine(answers, reference)
    if workload.answer == "labels":
        return sum(_top(a) == _top(r) for a, r in zip(answers, reference)) / len(answers)
    return sum(a == r for a, r in zip(answers, reference)) / len(answers)


def min_cosine(ours: list[Any], reference: list[Any]) -> float | None:
    """The smallest cosine between answers, vector by vector (None when their shapes differ)."""
    worst = 1.0
    for a, b in zip(ours, reference):
        x, y = np.squeeze(np.asarray(a, dtype=np.float64)), np.squeeze(np.asarray(b, dtype=np.float64))  # [1, ...] is [...]
        if x.shape != y.shape:
            return None
        x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        cos = (x * y).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)
        worst = min(worst, float(cos.min()))
    return worst


def _top(answer: Any) -> Any:
    """The first label of a classification answer, whether one text's list or a list of one."""
    while isinstance(answer, list) and answer:
        answer = answer[0]
    return answer.get("label") if isinstance(answer, dict) else answer


def _fits(text: Any, schema: dict[str, Any]) -> bool:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return False
    return isinstance(value, dict) and all(key in value for key in schema.get("required", []))
