"""Where one workload's requests go on a server, and how its answers come back in the reference rung's shape.

The workloads' bodies are squeezer's own (the Hugging Face shape for encoders, OpenAI's for chat), and every rung
of the ladder takes them as they are. A peer speaks another dialect (infinity-emb and any OpenAI server take
`{"model", "input"}` and answer `{"data": [{"embedding"}]}`), so its route reshapes each body before it is sent
(the load generator posts the reshaped ones) and each answer before it is compared: the same texts, measured and
checked the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from squeezer.benchmark.workloads import Workload

Shape = Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def embedding_body(body: dict[str, Any]) -> dict[str, Any]:
    """squeezer's `{"inputs": text or texts}` as an OpenAI embeddings request for the model the peer serves."""
    return {"model": "bench", "input": body["inputs"]}


def embedding_answer(answer: Any) -> Any:
    """OpenAI's `{"data": [{"index", "embedding"}]}` as the list of vectors the reference answers, in input order
    (one text's list of one compares with its single vector: agreement squeezes the leading 1)."""
    if not isinstance(answer, dict):
        return None
    return [item["embedding"] for item in sorted(answer.get("data", []), key=lambda item: item.get("index", 0))]


def json_object_body(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's `json_schema` response format as llama-cpp-python's server takes it (it refuses OpenAI's form):
    `{"type": "json_object", "schema": ...}`, the same schema."""
    schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema")
    return {**body, "response_format": {"type": "json_object", "schema": schema}}


# Each answer kind's OpenAI dialect: (body as sent, answer as compared). Chat bodies already are OpenAI's.
OPENAI: dict[str, tuple[Shape, Shape]] = {
    "vectors": (embedding_body, embedding_answer),
    "text": (_same, _same),
    "json": (_same, _same),
}
# The dialects a peer may speak (peers.Launch.dialect): OpenAI's, and the servers that part from it.
DIALECTS: dict[str, dict[str, tuple[Shape, Shape]]] = {
    "openai": OPENAI,
    "llama-cpp-python": {**OPENAI, "json": (json_object_body, _same)},
}


@dataclass(frozen=True)
class Route:
    """One workload on one server: the path its requests go to, and the body and answer reshaping."""

    path: str
    body: Shape = _same
    answer: Shape = _same

    def bodies(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.body(b) for b in bodies]


def native(workload: Workload) -> Route:
    """The workload as squeezer and the out-of-the-box app take it."""
    return Route(workload.path)


def spoken(workload: Workload, path: str, dialect: str = "openai") -> Route:
    """The workload in `dialect` (one of DIALECTS), posted to `path` (infinity-emb serves `/embeddings`, most
    others `/v1/embeddings`); KeyError for an answer kind the dialect has no route for (labels)."""
    body, answer = DIALECTS[dialect][workload.answer]
    return Route(path, body, answer)
