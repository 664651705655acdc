"""What a task is: validated parameters, pre-processing into features, post-processing of head outputs.

A request's input becomes one or more items (a list input gives several); each item becomes one or more
features (one token sequence each: question answering over a long context, or zero-shot classification with
several labels, need several). Backends only ever see features, batched by the scheduler; tasks own
everything else, so every backend returns the same answers for the same logits.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar, get_type_hints

import numpy as np

from squeezer.caches import SCOPE, LRUCache
from squeezer.errors import ClientError


class InputError(ClientError):
    """The client sent something the task cannot run (422 unless said otherwise); the message names the field."""

    status = 422


@dataclass
class Feature:
    """One token sequence for the model, with whatever post-processing needs to map its outputs back."""

    input_ids: list[int]
    token_type_ids: list[int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class Prepared:
    """An item turned into features; `truncated` says whether any text was cut to the model's length."""

    features: list[Feature]
    truncated: bool = False

    @property
    def n_tokens(self) -> int:
        return sum(len(f) for f in self.features)


@dataclass(frozen=True)
class Pooling:
    """Sentence-transformers pooling declared by the model folder (1_Pooling/config.json, Normalize)."""

    mode: str  # "mean", "cls", "max", "mean_sqrt_len", "lasttoken"
    normalize: bool


@dataclass
class ModelInfo:
    """What tasks need to know about a loaded model: its tokenizer, config and limits."""

    tokenizer: Any  # a transformers fast tokenizer
    config: Any  # a transformers PretrainedConfig
    max_length: int
    pooling: Pooling | None = None

    token_cache: LRUCache[tuple[Any, bool]] | None = None

    def encode(self, text: str, pair: str | None = None, *, truncate: bool, **kwargs: Any) -> tuple[Any, bool]:
        """Tokenize one text (or pair) to at most `max_length` tokens; say whether anything was cut.

        Called with `truncate=False`, an over-long input is a client error rather than a silent cut.
        Repeated texts come from the token cache (per tenant: `squeezer.caches.SCOPE`); callers must not mutate
        what they get.
        """
        key = (SCOPE.get(), text, pair, truncate, tuple(sorted(kwargs.items())))
        cached = self.token_cache.get(key) if self.token_cache is not None else None
        if cached is not None:
            return cached
        result = self._encode(text, pair, truncate, kwargs)
        if self.token_cache is not None:
            size = len(text) + len(pair or "") + 8 * len(result[0]["input_ids"]) * len(result[0])  # key + token arrays
            self.token_cache.put(key, result, size)
        return result

    def _encode(self, text: str, pair: str | None, truncate: bool, kwargs: dict[str, Any]) -> tuple[Any, bool]:
        rust = None if kwargs else self._rust
        enc = direct_encode(rust, self._input_names, text, pair) if rust else self.tokenizer(text, pair, truncation=False, **kwargs)
        if len(enc["input_ids"]) <= self.max_length:
            return enc, False
        if not truncate:
            raise InputError(
                f"inputs: {len(enc['input_ids'])} tokens exceed this model's maximum of {self.max_length}; "
                "shorten the input or allow parameters.truncate"
            )
        strategy = "only_first" if pair is not None else "longest_first"
        return self.tokenizer(text, pair, truncation=strategy, max_length=self.max_length, **kwargs), True


    @functools.cached_property
    def _rust(self) -> Any:
        """A private copy of the fast tokenizer's Rust core, with no truncation or padding configured.

        The transformers wrapper reconfigures its Rust tokenizer on every call and builds a BatchEncoding,
        which costs several times the tokenization itself; on the event loop of a busy server that is
        throughput lost. The copy is never reconfigured, so threads may share it. None for a slow tokenizer.
        """
        core = getattr(self.tokenizer, "_tokenizer", None) if getattr(self.tokenizer, "is_fast", False) else None
        if core is None:
            return None
        from tokenizers import Tokenizer

        rust = Tokenizer.from_str(core.to_str())
        rust.no_truncation()
        rust.no_padding()
        return rust

    @functools.cached_property
    def _input_names(self) -> tuple[str, ...]:
        return tuple(getattr(self.tokenizer, "model_input_names", ("input_ids", "attention_mask")))


LONG_TEXT = 4096  # characters past which tokenizing releases the GIL (a thread hop's worth of work below it)


def direct_encode(rust: Any, names: tuple[str, ...], text: str, pair: str | None) -> dict[str, list[int]]:
    """What the transformers fast tokenizer returns for `tokenizer(text, pair)`, straight from its Rust core.

    A long text goes through the batch call, which releases the GIL while it works (`encode` holds it: 40 ms
    for 100k characters), so the event loop keeps running while the prep thread tokenizes.
    """
    if len(text) + len(pair or "") <= LONG_TEXT:
        enc = rust.encode(text, pair)
    else:
        [enc] = rust.encode_batch([(text, pair) if pair is not None else text])
    out = {"input_ids": enc.ids}
    if "token_type_ids" in names:
        out["token_type_ids"] = enc.type_ids
    if "attention_mask" in names:
        out["attention_mask"] = enc.attention_mask
    return out


class Task(Protocol):
    """A task family: feature-extraction, text-classification, question-answering, ..."""

    name: ClassVar[str]
    head: ClassVar[str]  # the model head it runs on (see squeezer.backends.base.HEAD_OUTPUTS)
    params_type: ClassVar[type]  # the dataclass `parse` reads `parameters` into; the API documents it too

    def supports(self, info: ModelInfo) -> bool:
        """Whether this model can serve the task (zero-shot needs an entailment label, ...)."""

    def claims(self, inputs: Any, parameters: dict[str, Any]) -> bool:
        """Whether a request's shape asks for this task rather than the model's default one."""

    def parse(self, inputs: Any, parameters: dict[str, Any]) -> tuple[list[Any], Any, bool]:
        """Validate a request: its items, its typed parameters, and whether the input was a list."""

    def prepare(self, item: Any, params: Any, info: ModelInfo) -> Prepared:
        """Tokenize one item into features, keeping in `Feature.meta` whatever `finish` needs from the tokenizer."""

    def finish(
        self, item: Any, params: Any, prepared: Prepared, outputs: list[dict[str, np.ndarray]], info: ModelInfo
    ) -> Any:
        """Turn one item's per-feature head outputs into its JSON-ready answer.

        `prepared` is what `prepare` made of this item; `outputs[i]` is the head output for
        `prepared.features[i]`. Nothing is tokenized again here.
        """

    def combine(self, results: list[Any], batched: bool) -> Any:
        """Shape the answers of all items the way the Hugging Face Inference API does."""


class BaseTask:
    """Defaults shared by the tasks: claim nothing, support any model, answer a list for a list input."""

    name: ClassVar[str]
    head: ClassVar[str]
    params_type: ClassVar[type]

    def supports(self, info: ModelInfo) -> bool:
        return True

    def claims(self, inputs: Any, parameters: dict[str, Any]) -> bool:
        return False

    def combine(self, results: list[Any], batched: bool) -> Any:
        return results if batched else results[0]


def text_items(inputs: Any) -> tuple[list[str], bool]:
    """Validate `inputs` as a non-empty string or a non-empty list of non-empty strings."""
    if isinstance(inputs, str):
        if not inputs.strip():
            raise InputError("inputs: must be a non-empty string")
        return [inputs], False
    if isinstance(inputs, list):
        if not inputs:
            raise InputError("inputs: must not be an empty list")
        for i, text in enumerate(inputs):
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"inputs[{i}]: must be a non-empty string")
        return list(inputs), True
    raise InputError(f"inputs: expected a string or a list of strings, got {type(inputs).__name__}")


P = TypeVar("P")

_JSON_NAMES = {int: "an integer", float: "a number", bool: "a boolean", str: "a string", dict: "an object"}


def parse_params(cls: type[P], raw: Any) -> P:
    """Build a task's frozen parameter dataclass from the request's `parameters` object.

    Types are checked (an int is accepted where a float is expected, never a bool for a number), each
    error names the field, and parameters this task does not know are ignored, as the Inference API does.
    A field's metadata may hold `choices` and a `check` (a predicate with its `rule` text).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"parameters: expected an object, got {type(raw).__name__}")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if raw.get(f.name) is None:
            continue
        kwargs[f.name] = _check_value(f"parameters.{f.name}", raw[f.name], hints[f.name], f.metadata)
    return cls(**kwargs)


_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string", dict: "object"}
_STRINGS = {"type": "array", "items": {"type": "string", "minLength": 1}}


def params_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema of what `parse_params(cls, ...)` accepts, for the API's OpenAPI document: read from the same
    fields, types, choices and rules, so the document cannot drift from the validation. A rule that is code (a
    check) is stated in the field's description."""
    properties = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        schema = _value_schema(_hints(cls)[f.name])
        if f.metadata.get("choices"):
            schema["enum"] = list(f.metadata["choices"])
        if f.metadata.get("bounds"):
            schema.update(f.metadata["bounds"])
        if f.metadata.get("rule"):
            schema["description"] = f.metadata["rule"]
        if isinstance(f.default, (bool, int, float, str, tuple)):
            schema["default"] = list(f.default) if isinstance(f.default, tuple) else f.default
        properties[f.name] = schema
    return {"type": "object", "properties": properties}


def _value_schema(kind: Any) -> dict[str, Any]:
    args = [a for a in getattr(kind, "__args__", ()) if a is not type(None)]
    base = args[0] if len(args) == 1 and getattr(kind, "__origin__", None) not in (list, tuple) else kind
    if getattr(base, "__origin__", None) in (list, tuple):  # one string is taken as a list of one
        return {"anyOf": [{"type": "string", "minLength": 1}, _STRINGS]}
    return {"type": _JSON_TYPES[base]}


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """A parameter class's resolved annotations, computed once (resolving them is slow)."""
    return get_type_hints(cls)


def _check_value(name: str, value: Any, kind: Any, meta: Any) -> Any:
    args = [a for a in getattr(kind, "__args__", ()) if a is not type(None)]
    origin = getattr(kind, "__origin__", None)
    if origin is list:
        if isinstance(value, str):
            value = [value]  # the Inference API accepts a single label where a list is expected
        if not isinstance(value, list) or not value:
            raise InputError(f"{name}: expected a non-empty list of strings")
        if not all(isinstance(v, str) and v.strip() for v in value):
            raise InputError(f"{name}: every entry must be a non-empty string")
        return list(value)
    base = args[0] if args and origin is not list else kind
    if getattr(base, "__origin__", None) is list:
        return _check_value(name, value, base, meta)
    ok = isinstance(value, base) and not (base is not bool and isinstance(value, bool))
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise InputError(f"{name}: expected {_JSON_NAMES.get(base, base.__name__)}, got {value!r}")
    if base is float and not math.isfinite(value):  # Python's JSON reader accepts NaN and Infinity
        raise InputError(f"{name}: expected a finite number, got {value!r}")
    if meta.get("choices") and value not in meta["choices"]:
        raise InputError(f"{name}: must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
    if meta.get("check") and not meta["check"](value):
        raise InputError(f"{name}: {meta['rule']}, got {value!r}")
    return value


MAX_SEED = 2**64 - 1  # the largest request seed: torch generators take up to this (TGI's seed is a u64)


def param(default: Any = None, *, choices: tuple[Any, ...] | None = None, check: Any = None, rule: str = "",
          bounds: dict[str, float] | None = None) -> Any:
    """Declare a task parameter with its allowed values or a validity rule (`rule` is the error's text).

    A numeric range is given as `bounds`, JSON Schema's own words (minimum, maximum, exclusiveMinimum): the same
    numbers are checked here and published in the API's OpenAPI document (`params_schema`)."""
    if bounds:
        check = functools.partial(_within, bounds)
    return field(default=default, metadata={"choices": choices, "check": check, "rule": rule, "bounds": bounds})


def _within(bounds: dict[str, float], value: float) -> bool:
    return (value >= bounds.get("minimum", value) and value <= bounds.get("maximum", value)
            and ("exclusiveMinimum" not in bounds or value > bounds["exclusiveMinimum"]))


def positive(rule: str = "must be a positive integer") -> dict[str, Any]:
    return {"bounds": {"minimum": 1}, "rule": rule}


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax, as the transformers pipelines compute it."""
    shifted = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
