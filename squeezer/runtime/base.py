"""The runtime seam: one served model behind one protocol, asked for what it can do, never for its class.

A runtime is a model source, its task, a backend and the scheduler that feeds it (encoders: the dynamic
batcher; causal LMs: the continuous-batching decode loop; encoder-decoders: one request at a time). The
engine keeps the registry, the result cache, limits and deadlines; for the rest it looks at a runtime's
`capabilities` and calls the narrow protocol that goes with one (`Inferring`, `Generating`). Capabilities
are known from the configured task before the model loads (`capabilities_for`), so choosing a model for a
request never depends on which models happen to be loaded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from squeezer.generation.outputs import Generation, TokenEvent
from squeezer.generation.params import GenerationParams
from squeezer.requests import Answer
from squeezer.runtime.prep import PrepThread

# What a runtime can be asked for; the dialects name the one they need when they resolve a model.
INFER = "infer"  # the Inference API's task answers (`Inferring.infer`)
EMBED = "embed"  # sentence embeddings (TEI /embed, OpenAI /v1/embeddings), through `infer`
GENERATE = "generate"  # text for a prompt (`Generating.generate`)
STREAM = "stream"  # the same, token by token (`Generating.stream`)
CHAT = "chat"  # chat messages through the model's template (`Generating.prepare` with messages)
TOKENIZE = "tokenize"  # token spans of a text (TEI /tokenize)


@dataclass(frozen=True)
class CacheStats:
    """A cache's counters since the model loaded."""

    hits: int
    misses: int


@dataclass(frozen=True)
class RuntimeStats:
    """What a runtime reports for metrics, read at scrape time."""

    queue_depth: int  # work waiting for the model: sequences (encoders), requests (decoders) or inputs
    occupancy: float | None = None  # decoders: the share of decode slots in use
    token_cache: CacheStats | None = None  # tokenizations of repeated texts
    prefix_cache: CacheStats | None = None  # decoders that keep finished sequences' keys and values
    prefix_tokens_reused: int = 0  # prompt tokens taken from the prefix cache, not prefilled


@dataclass(frozen=True)
class TokenSpan:
    """One token of a text: its id, its text (the token's own for special tokens), and where it stands."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


class Vocabulary:
    """Token ids as text, for the dialects (TGI's token objects, OpenAI's logprobs, TEI's /tokenize), so the
    HTTP layer never reaches into a tokenizer."""

    def __init__(self, tokenizer: Any, adds_special_tokens: bool = True) -> None:
        """`adds_special_tokens`: whether the model's own requests are tokenized with them (an encoder's are; a
        plain generation prompt is not), what /tokenize shows unless the client asks otherwise."""
        self._tokenizer = tokenizer
        self.special_ids = frozenset(tokenizer.all_special_ids)  # the tokenizer rebuilds this list on every read
        self.adds_special_tokens = adds_special_tokens

    def text(self, token_id: int) -> str:
        """One token's text, as `decode([id])` gives it."""
        return str(self._tokenizer.decode([token_id]))

    def spans(self, text: str, add_special_tokens: bool | None = None) -> list[TokenSpan]:
        """The tokens of `text` with their character offsets (special tokens have none); None: as the model's
        own requests are tokenized."""
        specials = self.adds_special_tokens if add_special_tokens is None else add_special_tokens
        enc = self._tokenizer(text, add_special_tokens=specials, return_offsets_mapping=True, return_special_tokens_mask=True)
        spans = []
        for tid, (start, stop), special in zip(enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]):
            if special:
                spans.append(TokenSpan(tid, self._tokenizer.convert_ids_to_tokens(tid), True, None, None))
            else:
                spans.append(TokenSpan(tid, text[start:stop], False, start, stop))
        return spans


@dataclass(frozen=True)
class Inferred:
    """An answer from `Inferring.infer`, with where its time went; `cacheable` is False for sampled answers."""

    answer: Answer
    queue_seconds: float
    tokenize_seconds: float
    inference_seconds: float
    cacheable: bool = True


@dataclass(frozen=True)
class Prompt:
    """What the model continues: the text (for return_full_text) and its token ids."""

    text: str
    ids: list[int]


@dataclass(frozen=True)
class GenerationRequest:
    """A validated generation request: its prompt and parameters, ready for `generate` or `stream`; `scope` is
    whose cached prompts it may reuse (the tenant, and its cache salt: see `squeezer.backends.prefix_cache`)."""

    prompt: Prompt
    params: GenerationParams
    scope: str = ""


@dataclass(frozen=True)
class Completion:
    """Every finished sequence for one prompt, and the vocabulary to show their tokens with."""

    model_id: str
    prompt: Prompt
    params: GenerationParams
    generations: list[Generation]
    vocabulary: Vocabulary


class EventStream(Protocol):
    """Token events until the one with `is_last`; closing it early frees the sequence."""

    def __aiter__(self) -> AsyncIterator[TokenEvent]: ...

    async def aclose(self) -> None: ...


@dataclass
class Streaming:
    """A started streamed generation: read `events` until the one with `is_last`."""

    model_id: str
    prompt: Prompt
    params: GenerationParams
    events: EventStream
    vocabulary: Vocabulary


@dataclass
class Hooks:
    """Where schedulers report what they did (the metrics listen here); each gets the model id first."""

    on_batch: Callable[[str, Any], None] | None = None
    on_step: Callable[[str, Any], None] | None = None
    on_finish: Callable[[str, Any], None] | None = None

    def bind(self, name: str, model_id: str) -> Callable[[Any], None] | None:
        hook = getattr(self, name)
        return (lambda stats: hook(model_id, stats)) if hook else None


class Runtime(Protocol):
    """One served model: what it is, what it can do, and its lifecycle (start, drain, close)."""

    kind: ClassVar[str]

    @property
    def model_id(self) -> str: ...

    @property
    def task(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[str]: ...

    @property
    def vocabulary(self) -> Vocabulary: ...

    @property
    def prep(self) -> PrepThread:
        """The thread that prepares (parses, templates, tokenizes) this model's requests, off the event loop."""
        ...

    @property
    def memory_bytes(self) -> int:
        """What the model holds now (weights as loaded, caches), 0 when it cannot tell."""
        ...

    def describe(self) -> dict[str, Any]: ...

    def stats(self) -> RuntimeStats: ...

    def start(self) -> None:
        """Start the scheduler's workers (on the event loop, once the model has loaded)."""
        ...

    async def drain(self) -> None:
        """Refuse new work, finish what was accepted, stop the workers."""
        ...

    def close(self) -> None:
        """Free the model (after `drain`)."""
        ...


class Inferring(Runtime, Protocol):
    """Runtimes with INFER: a task answer for Inference API inputs."""

    async def infer(self, inputs: Any, parameters: Any, task: str | None) -> Inferred: ...


class Generating(Runtime, Protocol):
    """Runtimes with GENERATE and STREAM (and CHAT where they take messages)."""

    def prepare(self, prompt: Any, messages: Any, parameters: Any, tools: Any = None) -> GenerationRequest:
        """Validate and tokenize a request before anything is queued (4xx here); run on `prep`. `tools`: OpenAI's
        function list, shown to the model through its chat template."""
        ...

    async def generate(self, request: GenerationRequest) -> Completion: ...

    async def stream(self, request: GenerationRequest) -> Streaming: ...


@dataclass(frozen=True)
class RuntimeKind:
    """A row of the runtime table: which tasks a kind serves, what it can do for each, and how to load it."""

    name: str
    tasks: tuple[str, ...]
    capabilities: Callable[[str], frozenset[str]]
    load: Callable[..., Runtime]
