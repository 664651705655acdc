"""The benchmark's workloads, as data: which models they fit, which route they post to, what one request
carries, drawn from a fixed seed.

embed-short: one sentence of 8 to 48 words (about 31 MiniLM tokens); embed-batch: 32 passages of 64 to 256 words;
classify: one sentence to a text classifier; chat: a greedy 128-token chat answer; chat-json: the same under a
JSON schema (structured output).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

WORDS = (
    "the model serves requests quickly while batching many sentences together for throughput and latency "
    "engineers deploy transformers on cpus with onnx runtime quantization graph fusion and careful padding "
    "every answer must match the reference within a small tolerance so users can trust the faster server "
    "Paris Berlin Tokyo numbers like 42 and 3.14 appear too, along with punctuation; questions? yes!"
).split()
TOPICS = ("a lighthouse keeper", "a lost robot", "two rival bakers", "a city under snow", "a dragon who counts",
          "a pianist on a train", "the last library", "a fox and a crow", "a clockmaker's apprentice", "a river town")
ANSWER_SCHEMA: dict[str, Any] = {  # chat-json's schema: a small record, as extraction pipelines ask for, bounded
    "type": "object",  # in plain characters (one token each at least) so every answer completes within 150 tokens
    "properties": {"title": {"type": "string", "pattern": "^[A-Za-z0-9 ,.'-]{1,24}$"},
                   "characters": {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z .'-]{1,16}$"},
                                  "minItems": 1, "maxItems": 2},
                   "summary": {"type": "string", "pattern": "^[A-Za-z0-9 ,.'-]{1,40}$"}},
    "required": ["title", "characters", "summary"],
    "additionalProperties": False,
}
ENCODER_TASKS = frozenset({"feature-extraction", "sentence-similarity"})


def sentences(count: int, seed: int = 0, low: int = 8, high: int = 48) -> list[str]:
    """`count` texts of `low` to `high` words, numbered so no two are equal (no cache can answer them)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))) + f" ({i})" for i in range(count)]


def chat_prompts(count: int, seed: int = 0) -> list[str]:
    """`count` different requests for a long answer, so a greedy chat runs to its token limit."""
    rng = random.Random(seed)
    return [f"Write a long, detailed story about {rng.choice(TOPICS)} and {rng.choice(TOPICS)}. Story number {i}."
            for i in range(count)]


@dataclass(frozen=True)
class Workload:
    """A kind of request: the tasks it fits, its route, and what one request carries.

    `answer` says how answers are compared with the reference rung's: "vectors" (minimum cosine), "labels"
    (share of equal top labels), "text" (share of identical greedy answers) or "json" (share of answers that
    parse and carry the schema's required keys).
    """

    name: str
    description: str
    tasks: frozenset[str]
    path: str
    answer: str
    per_request: int = 1  # texts in one request (1: a bare string)
    low: int = 8  # words per text
    high: int = 48
    max_tokens: int = 0  # new tokens per chat answer
    schema: dict[str, Any] | None = field(default=None, hash=False)
    checked: int = 8  # requests whose answers are compared with the reference rung's
    concurrency: tuple[int, ...] = (1, 4, 16, 64)  # the default sweep

    @property
    def generates(self) -> bool:
        return self.max_tokens > 0

    def bodies(self, count: int, seed: int = 0) -> list[dict[str, Any]]:
        if self.generates:
            return [self._chat(prompt) for prompt in chat_prompts(count, seed)]
        texts = sentences(count * self.per_request, seed, self.low, self.high)
        chunks = [texts[i * self.per_request:(i + 1) * self.per_request] for i in range(count)]
        return [{"inputs": chunk[0] if self.per_request == 1 else chunk, "options": {"use_cache": False}} for chunk in chunks]

    def _chat(self, prompt: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": "bench", "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                                "max_tokens": self.max_tokens, "stream": True, "stream_options": {"include_usage": True}}
        if self.schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "story", "schema": self.schema}}
        return body


CHAT = frozenset({"text-generation"})
WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("embed-short", "one sentence of 8 to 48 words", ENCODER_TASKS, "/models/bench", "vectors"),
    Workload("embed-batch", "32 passages of 64 to 256 words", ENCODER_TASKS, "/models/bench", "vectors", 32, 64, 256),
    Workload("classify", "one sentence of 8 to 48 words to a classifier", frozenset({"text-classification"}),
             "/models/bench", "labels"),
    Workload("chat", "a greedy chat answer of 128 new tokens", CHAT, "/v1/chat/completions", "text", max_tokens=128,
             checked=2, concurrency=(1, 16)),
    Workload("chat-json", "a greedy chat answer under a bounded JSON schema (at most 150 tokens)", CHAT,
             "/v1/chat/completions", "json", max_tokens=150, schema=ANSWER_SCHEMA, checked=2, concurrency=(1, 16)),
)}


def fitting(task: str) -> list[str]:
    """The workloads a model serving `task` can run."""
    return [w.name for w in WORKLOADS.values() if task in w.tasks]
