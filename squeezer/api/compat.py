"""Answer shapes that depend on which client asks.

huggingface_hub before 1.2 parses a zero-shot-classification answer as the pipeline's
`{"sequence", "labels", "scores"}`; 1.2 and later, like today's Inference API, as a list of
`{"label", "score"}`. Both are in use, so the server answers each in the shape it parses.
"""

from __future__ import annotations

import re
from typing import Any

_HUB_AGENT = re.compile(r"hf_hub/(\d+)\.(\d+)")
LIST_SHAPE_SINCE = (1, 2)


def hub_version(user_agent: str) -> tuple[int, int] | None:
    match = _HUB_AGENT.search(user_agent)
    return (int(match.group(1)), int(match.group(2))) if match else None


def wants_pipeline_zero_shot(user_agent: str) -> bool:
    version = hub_version(user_agent)
    return version is not None and version < LIST_SHAPE_SINCE


def pipeline_zero_shot(output: Any, inputs: Any) -> Any:
    """[{label, score}, ...] per input -> the pipeline's {sequence, labels, scores} per input."""
    if isinstance(inputs, list):
        return [pipeline_zero_shot(one, text) for one, text in zip(output, inputs)]
    return {"sequence": inputs, "labels": [r["label"] for r in output], "scores": [r["score"] for r in output]}


def shape_for_client(task: str, output: Any, inputs: Any, user_agent: str) -> Any:
    if task == "zero-shot-classification" and wants_pipeline_zero_shot(user_agent):
        return pipeline_zero_shot(output, inputs)
    return output
