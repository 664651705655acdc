"""Structured output (issue 15, first slice): grammars compiled once per model and enforced token by token in the
decode loop; every constrained answer parses and validates, greedy or sampled, in company of unconstrained rows,
which decode exactly as they would alone."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import transformers

from squeezer.api.generation import OPENAI_FINISH
from squeezer.backends.torch_decoder import TorchDecoder
from squeezer.config import DecodingConfig
from squeezer.generation.grammar import Grammars, grammar_text
from squeezer.generation.outputs import FinishReason
from squeezer.generation.params import GenerationParams
from squeezer.scheduling.decoding import DecodeLoop
from squeezer.tasks.base import InputError

pytestmark = pytest.mark.asyncio
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"enum": ["yes", "no", "maybe"]}, "sure": {"type": "boolean"}},
    "required": ["answer", "sure"],
    "additionalProperties": False,
}


def valid(text: str) -> bool:
    value = json.loads(text)
    return set(value) == {"answer", "sure"} and value["answer"] in ("yes", "no", "maybe") and isinstance(value["sure"], bool)


@pytest.fixture(scope="module")
def llama(tiny_decoder_path: Callable[[str], Path]):
    folder = tiny_decoder_path("llama")
    return transformers.AutoModelForCausalLM.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder)


async def test_constrained_rows_validate_and_plain_rows_are_untouched(llama) -> None:
    model, tok = llama
    decoder = TorchDecoder(model)
    grammars = Grammars(tok, decoder.eos_token_ids)
    loop = DecodeLoop(decoder, tok, DecodingConfig(), grammars=grammars)
    loop.start()
    try:
        prompt = tok("Is the sky blue?", add_special_tokens=False)["input_ids"]
        plain = GenerationParams(max_new_tokens=20)
        alone = await loop.generate(prompt, plain)
        json_greedy = GenerationParams(max_new_tokens=60, grammar={"type": "json", "value": SCHEMA})
        json_sampled = GenerationParams(max_new_tokens=60, do_sample=True, seed=7, grammar={"type": "json", "value": json.dumps(SCHEMA)})
        regex = GenerationParams(max_new_tokens=20, grammar={"type": "regex", "value": "(yes|no), [0-9]{2}"})
        together = await asyncio.gather(*(loop.generate(prompt, p) for p in (plain, json_greedy, json_sampled, regex, plain)))
    finally:
        await loop.close()
    assert together[0].token_ids == together[4].token_ids == alone.token_ids  # unconstrained: as alone
    for done in together[1:3]:
        assert valid(done.text), done.text
        assert done.finish_reason == "eos_token"  # the grammar completes, then only EOS may follow
    assert re.fullmatch("(yes|no), [0-9]{2}", together[3].text), together[3].text


@pytest.mark.filterwarnings("ignore:.*asyncio.*:pytest.PytestWarning")  # the module's asyncio mark; this one is sync
def test_a_bad_grammar_is_a_clear_error_before_queueing(llama) -> None:
    model, tok = llama
    grammars = Grammars(tok, [tok.eos_token_id])
    for bad, message in [
        ({"type": "xml", "value": "<a/>"}, "expected"),
        ({"type": "json", "value": "{not json"}, "not valid JSON"),
        ({"type": "json", "value": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}, "compile"),
        ({"type": "regex", "value": "(unclosed"}, "cannot compile it"),
        ({"type": "json", "value": {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}}},
         "no text satisfies it"),  # compiles, then can begin nothing: it was a 200 with empty content
        ({"type": "regex", "value": ""}, "non-empty"),
    ]:
        with pytest.raises(InputError, match=message):
            grammars.check(bad)
    assert grammar_text({"type": "regex", "value": "a+"})


class EndlessDecoder(TorchDecoder):
    """The tiny llama, with every EOS token's logit at -inf: a model that cannot end its answer. A grammar that is
    complete allows only EOS (llguidance never leaves a row with nothing: when its grammar cannot go on it allows
    EOS alone), so this is the real way a row reaches a dead end: no token both allowed and possible."""

    def _endless(self, logits: np.ndarray) -> np.ndarray:
        out = np.array(logits, dtype=np.float32)
        out[..., sorted(self.eos_token_ids)] = -np.inf
        return out

    def prefill_many(self, prompts: Sequence[Sequence[int]], scopes: Sequence[str] | None = None) -> list[tuple[int, np.ndarray]]:
        return [(handle, self._endless(logits)) for handle, logits in super().prefill_many(prompts, scopes)]

    def step(self, handles: Sequence[int], tokens: Sequence[int]) -> Any:
        return self._endless(super().step(handles, tokens))


async def test_a_grammar_dead_end_ends_its_row_with_a_finish_reason(llama, caplog: pytest.LogCaptureFixture) -> None:
    """Once "(yes|no)!" is written only EOS may follow, which this model cannot produce: the row ends there with
    finish reason "grammar" and its text (whole or streamed, the last event choosing no token), the log says why,
    and the unconstrained rows of the same steps decode as they do alone."""
    model, tok = llama
    decoder = EndlessDecoder(model)
    loop = DecodeLoop(decoder, tok, DecodingConfig(), grammars=Grammars(tok, decoder.eos_token_ids))
    loop.start()
    try:
        prompt = tok("Is the sky blue?", add_special_tokens=False)["input_ids"]
        plain = GenerationParams(max_new_tokens=12)
        constrained = GenerationParams(max_new_tokens=12, grammar={"type": "regex", "value": "(yes|no)!"}, top_n_tokens=2)
        alone = await loop.generate(prompt, plain)
        with caplog.at_level(logging.WARNING, logger="squeezer.scheduling.decoding"):
            together = await asyncio.gather(loop.generate(prompt, plain), loop.generate(prompt, constrained),
                                            loop.generate(prompt, plain))
            streamed = [event async for event in await loop.stream(prompt, constrained)]
    finally:
        await loop.close()
    assert together[0].token_ids == together[2].token_ids == alone.token_ids and alone.finish_reason == "length"
    ended = together[1]
    assert re.fullmatch("(yes|no)!", ended.text) and ended.finish_reason == "grammar", ended
    assert ended.generated_tokens == len(ended.token_ids) == len(ended.logprobs or []) > 0
    assert tok.decode(ended.token_ids) == ended.text
    last = streamed[-1]
    assert last.is_last and last.token_id is None and last.finish_reason == "grammar"
    assert "".join(e.text for e in streamed) == ended.text and [e.token_id for e in streamed[:-1]] == ended.token_ids
    assert "the model gives every token it allows a logit of -inf" in caplog.text


@pytest.mark.filterwarnings("ignore:.*asyncio.*:pytest.PytestWarning")  # the module's asyncio mark; this one is sync
def test_every_finish_reason_has_an_openai_name() -> None:
    assert set(OPENAI_FINISH) == set(typing.get_args(FinishReason)) and OPENAI_FINISH["grammar"] == "grammar"
