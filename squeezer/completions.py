"""Text generation requests around the decode loop: prompts (plain or chat), parameters, finished answers.

The engine calls these; the HTTP dialects (Inference API, TGI, OpenAI) only shape what comes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from squeezer.loading import GenerativeModel
from squeezer.scheduling.decoding import DecodeLoop, TokenStream
from squeezer.tasks import InputError
from squeezer.tasks.generation import Generation, GenerationParams, chat_prompt_ids


@dataclass(frozen=True)
class Prompt:
    """What the model continues: the text (for return_full_text) and its token ids."""

    text: str
    ids: list[int]


@dataclass(frozen=True)
class Completion:
    """Every finished sequence for one prompt."""

    model_id: str
    prompt: Prompt
    params: GenerationParams
    generations: list[Generation]


@dataclass
class Streaming:
    """A started streamed generation: read `events` until the one with `is_last`."""

    model_id: str
    prompt: Prompt
    params: GenerationParams
    events: TokenStream


def make_prompt(model: GenerativeModel, prompt: Any = None, messages: Any = None) -> Prompt:
    """A plain prompt is tokenized as the text-generation pipeline does (no special tokens added);
    chat messages go through the model's own chat template."""
    tokenizer = model.info.tokenizer
    if messages is not None:
        ids = chat_prompt_ids(tokenizer, messages)
        return Prompt(tokenizer.decode(ids), ids)
    if not isinstance(prompt, str) or not prompt:
        raise InputError("inputs: expected a non-empty string prompt")
    return Prompt(prompt, list(tokenizer(prompt, add_special_tokens=False)["input_ids"]))


async def complete(model: GenerativeModel, loop: DecodeLoop, prompt: Prompt, params: GenerationParams) -> Completion:
    generations = await loop.generate_all(prompt.ids, params)
    return Completion(model.model_id, prompt, params, generations)


async def start_stream(model: GenerativeModel, loop: DecodeLoop, prompt: Prompt, params: GenerationParams) -> Streaming:
    return Streaming(model.model_id, prompt, params, await loop.stream(prompt.ids, params))
