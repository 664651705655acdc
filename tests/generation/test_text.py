"""Detokenization that never splits a character, stop sequences, and a sequence's finish reasons."""

from __future__ import annotations

from typing import Any

from squeezer.generation.params import GenerationParams
from squeezer.generation.text import IncrementalDecoder, SequenceText, StopMatcher


def test_stop_matcher_finds_the_earliest_stop_across_deltas() -> None:
    stops = StopMatcher(["END", "\n\n"])
    assert stops.find("abc E", "N") is None
    assert stops.find("abc EN", "Dxyz") == 1  # cut "D|xyz": the stop ends one character into the delta
    assert stops.find("a", "\n\nEND") == 2
    assert StopMatcher(None).find("abc", "END") is None


def test_incremental_decoding_never_splits_characters(tokenizer: Any) -> None:
    text = "naïve café 🤗 你好世界 Привет"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())  # multi-byte characters span several byte-level tokens
    prompt = tokenizer("Hello", add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(tokenizer, prompt)
    deltas = [decoder.add(token) for token in ids] + [decoder.flush()]
    assert "".join(deltas) == tokenizer.decode(ids) == text
    assert not any("\ufffd" in delta for delta in deltas)
    assert "" in deltas  # some tokens were held back until their character completed


def test_sequence_text_finish_reasons(tokenizer: Any) -> None:
    ids = tokenizer(" the capital of France", add_special_tokens=False)["input_ids"]
    eos = frozenset({1})
    length = SequenceText(tokenizer, [5], GenerationParams(), eos, max_new_tokens=2)
    assert [length.add(t)[1] for t in ids[:2]] == [None, "length"]
    stop = SequenceText(tokenizer, [5], GenerationParams(stop=["pital"]), eos, max_new_tokens=50)
    reasons = []
    for token in ids:
        reasons.append(stop.add(token)[1])
        if reasons[-1]:
            break
    assert reasons[-1] == "stop_sequence" and stop.text == " the capital"
    ended = SequenceText(tokenizer, [5], GenerationParams(), eos, max_new_tokens=50)
    assert ended.add(ids[0])[1] is None and ended.add(1) == ("", "eos_token")
