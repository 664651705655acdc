"""Structured output (issue 15, first slice): grammars compiled once per model and enforced token by token in the
decode loop; every constrained answer parses and validates, greedy or sampled, in company of unconstrained rows,
which decode exactly as they would alone."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import transformers

from squeezer.backends.torch_decoder import TorchDecoder
from squeezer.config import DecodingConfig
from squeezer.generation.grammar import Grammars, grammar_text
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
        ({"type": "regex", "value": ""}, "non-empty"),
    ]:
        with pytest.raises(InputError, match=message):
            grammars.check(bad)
    assert grammar_text({"type": "regex", "value": "a+"})
