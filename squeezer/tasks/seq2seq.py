"""Encoder-decoder generation: text2text-generation, summarization and translation (T5, BART, Marian).

Mirrors the transformers 4.57 `Text2TextGenerationPipeline` family: the task prefix from the model's
`config.prefix` or `config.task_specific_params[task]["prefix"]` (for "translation", the first
`translation_XX_to_YY` entry, as `pipeline("translation")` picks it), generation kwargs passed through to
`generate`, and decoding with `skip_special_tokens=True`. One answer per input, keyed by task:
`[{"generated_text"}]`, `[{"summary_text"}]`, `[{"translation_text"}]`; a list input gives a flat list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from squeezer.tasks.base import MAX_SEED, InputError, ModelInfo, param, parse_params, positive, text_items

SEQ2SEQ_TASKS: tuple[str, ...] = ("text2text-generation", "summarization", "translation")
MAX_BEAMS = 16  # beams one request may ask for: each is a sequence through the model at every step
OUTPUT_KEYS = {"text2text-generation": "generated_text", "summarization": "summary_text", "translation": "translation_text"}


@dataclass(frozen=True)
class Seq2SeqParams:
    """A request's parameters; None leaves the model's generation config (what the pipeline uses) in charge."""

    max_new_tokens: int | None = param(**positive("must be at least 1"))
    min_new_tokens: int | None = param(bounds={"minimum": 0}, rule="must be 0 or more")
    num_beams: int | None = param(bounds={"minimum": 1, "maximum": MAX_BEAMS}, rule=f"must be from 1 to {MAX_BEAMS}")
    do_sample: bool | None = param()
    temperature: float | None = param(bounds={"exclusiveMinimum": 0}, rule="must be greater than 0")
    top_k: int | None = param(**positive("must be at least 1"))
    top_p: float | None = param(bounds={"exclusiveMinimum": 0, "maximum": 1}, rule="must be in (0, 1]")
    repetition_penalty: float | None = param(bounds={"exclusiveMinimum": 0}, rule="must be greater than 0")
    seed: int | None = param(bounds={"minimum": 0, "maximum": MAX_SEED}, rule="must be between 0 and 2**64 - 1")
    clean_up_tokenization_spaces: bool = param(False)
    truncate: bool = param(True)

    def __post_init__(self) -> None:
        if self.min_new_tokens is not None and self.max_new_tokens is not None and self.min_new_tokens > self.max_new_tokens:
            raise InputError(
                f"parameters.min_new_tokens: {self.min_new_tokens} exceeds max_new_tokens ({self.max_new_tokens})"
            )

    def generate_kwargs(self) -> dict[str, Any]:
        """What goes to `model.generate` on top of the model's generation config (only what was set)."""
        names = ("max_new_tokens", "min_new_tokens", "num_beams", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


@dataclass(frozen=True)
class Seq2SeqRequest:
    """A parsed, tokenized request: one token list per input, and whether any input was cut."""

    task: str
    params: Seq2SeqParams
    input_ids: list[list[int]]
    batched: bool
    truncated: bool

    @property
    def n_tokens(self) -> int:
        return sum(len(ids) for ids in self.input_ids)


def task_params(config: Any, task: str) -> dict[str, Any]:
    """The model's `task_specific_params` for a task, as the pipeline looks them up (a copy)."""
    specific = getattr(config, "task_specific_params", None) or {}
    if task == "translation" and task not in specific:
        task = next((key for key in specific if key.startswith("translation")), task)
    return dict(specific.get(task) or {})


def task_prefix(config: Any, task: str) -> str:
    """The text the pipeline puts before every input ("summarize: " for T5), or ""."""
    prefix = task_params(config, task).get("prefix", getattr(config, "prefix", None))
    return prefix or ""


def flatten(parameters: Any) -> Any:
    """The Inference API spec (and huggingface_hub) nests generation options under `generate_parameters`;
    they are taken as if given at the top level (a top-level value wins)."""
    if not isinstance(parameters, dict) or parameters.get("generate_parameters") is None:
        return parameters
    nested = parameters["generate_parameters"]
    if not isinstance(nested, dict):
        raise InputError(f"parameters.generate_parameters: expected an object, got {type(nested).__name__}")
    rest = {k: v for k, v in parameters.items() if k != "generate_parameters"}
    return {**nested, **{k: v for k, v in rest.items() if v is not None}}


def parse(task: str, inputs: Any, parameters: Any, info: ModelInfo) -> Seq2SeqRequest:
    """Validate and tokenize a request; inputs longer than the model's maximum are cut when `truncate`."""
    texts, batched = text_items(inputs)
    params = parse_params(Seq2SeqParams, flatten(parameters))
    encoded = [encode_input(task, text, info, params.truncate) for text in texts]
    return Seq2SeqRequest(task, params, [ids for ids, _ in encoded], batched, any(cut for _, cut in encoded))


def encode_input(task: str, text: str, info: ModelInfo, truncate: bool) -> tuple[list[int], bool]:
    """One input's token ids, after the task prefix, and whether it was cut to the model's maximum."""
    enc, cut = info.encode(task_prefix(info.config, task) + text, truncate=truncate)
    return list(enc["input_ids"]), cut


def finish(request: Seq2SeqRequest, outputs: list[list[int]], tokenizer: Any) -> list[dict[str, str]]:
    """Decode each input's generated tokens under the task's key; always a list, as the pipelines answer."""
    key = OUTPUT_KEYS[request.task]
    clean = request.params.clean_up_tokenization_spaces
    return [{key: tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=clean)} for ids in outputs]


__all__ = ["OUTPUT_KEYS", "SEQ2SEQ_TASKS", "Seq2SeqParams", "Seq2SeqRequest", "encode_input", "finish", "parse", "task_prefix"]
