"""The prompts a compiled causal LM is checked on, tokenized exactly as serving tokenizes them.

Like `validation_data`, the built-in set varies where weight quantization hurts most: very short and longer
prompts, several languages, arithmetic, code and a summary of a long text. A model with a chat template gets
each prompt as one user turn through that template (what /v1/chat/completions sends it); a plain LM gets the
text as the text-generation pipeline tokenizes it (no special tokens added). A user's `--validation-data`
file replaces the texts, one prompt a line.
"""

from __future__ import annotations

from typing import Any

from squeezer.compiler.validation_data import Example

PROMPTS: tuple[str, ...] = (
    "Hi!",
    "What is the capital of France?",
    "Explain in two sentences why the sky is blue.",
    "Write a Python function that returns the factorial of n.",
    "If a train travels 120 km in 1.5 hours, what is its average speed in km/h?",
    "Combien font 17 fois 23 ? Explique ton calcul.",
    "Übersetze ins Englische: Der Zug fährt um 8:45 Uhr vom Hauptbahnhof ab.",
    "¿Cuál es el río más largo del mundo?",
    "List three red fruits, one per line.",
    "Fix the bug in this code: def add(a, b): return a - b",
    "Write a haiku about autumn leaves.",
    ("Summarize in one sentence: The committee, having reviewed the proposal over several sessions between March "
     "and June, concluded that the budget (EUR 2.4 million) was insufficient for the planned scope; it recommended "
     "reducing the pilot sites from twelve to eight, or postponing the second phase until more funding is secured."),
)


def builtin() -> list[Example]:
    """The built-in prompts as examples (so they hash and report like every task's validation set)."""
    return [Example(text) for text in PROMPTS]


def prompt_ids(tokenizer: Any, text: str, limit: int) -> list[int]:
    """One prompt's token ids as served, at most `limit` of them (the end kept: it holds the turn's start)."""
    from squeezer.generation.chat import chat_prompt_ids

    if getattr(tokenizer, "chat_template", None):
        ids = chat_prompt_ids(tokenizer, [{"role": "user", "content": text}])
    else:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids[-limit:] if limit > 0 else []


def encode(tokenizer: Any, examples: list[Example], limit: int) -> list[list[int]]:
    """Every example's prompt ids; an example must be a text (a `--validation-data` line)."""
    encoded = []
    for i, example in enumerate(examples):
        if not isinstance(example.inputs, str) or not example.inputs:
            raise ValueError(f"validation example {i + 1} cannot be used for text-generation: expected a text prompt")
        encoded.append(prompt_ids(tokenizer, example.inputs, limit))
    return encoded
