"""The generation gate: the reference passes against itself; a broken decoder is rejected on every metric."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from squeezer.compiler import generation_data as gd
from squeezer.compiler.gate import DEFAULT_BUDGET, TOLERANCES
from squeezer.compiler.generation_gate import (
    GenerationGate,
    common_prefix,
    decode,
    greedy,
    kl_divergence,
)

NEW_TOKENS = 12


class Perturbed:
    """A decoder whose logits are the wrapped one's plus seeded noise: a deliberately inaccurate candidate."""

    def __init__(self, inner, scale: float) -> None:
        self.inner, self.scale = inner, scale
        self.rng = np.random.default_rng(0)
        self.max_sequences, self.max_length, self.eos_token_ids = inner.max_sequences, inner.max_length, inner.eos_token_ids

    @property
    def live(self) -> int:
        return self.inner.live

    def _noisy(self, logits: np.ndarray) -> np.ndarray:
        return logits + self.scale * self.rng.standard_normal(logits.shape).astype(np.float32)

    def prefill_many(self, prompts: Sequence[Sequence[int]], scopes: Sequence[str] | None = None) -> list:
        return [(h, self._noisy(row)) for h, row in self.inner.prefill_many(prompts, scopes)]

    def step(self, handles: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
        return self._noisy(self.inner.step(handles, tokens))

    def release(self, handle: int) -> None:
        self.inner.release(handle)


@pytest.fixture(scope="module")
def llama(tiny_decoder_path):
    """(TorchDecoder, tokenizer) of the tiny random Llama."""
    from transformers import AutoTokenizer

    from squeezer.backends.torch_decoder import TorchDecoder

    folder = tiny_decoder_path("llama")
    return TorchDecoder.load(folder, max_sequences=16), AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def gate(llama) -> GenerationGate:
    decoder, tokenizer = llama
    prompts = gd.encode(tokenizer, gd.builtin(), decoder.max_length - NEW_TOKENS - 1)
    return GenerationGate(decoder, prompts, NEW_TOKENS)


def test_prompts_are_chat_formatted_and_varied(llama) -> None:
    _, tokenizer = llama
    assert 8 <= len(gd.PROMPTS) <= 12 and len(set(gd.PROMPTS)) == len(gd.PROMPTS)
    ids = gd.prompt_ids(tokenizer, gd.PROMPTS[1], 10_000)
    assert tokenizer.decode(ids).startswith("<|im_start|>user\n") and tokenizer.decode(ids).endswith("<|im_start|>assistant\n")
    assert len(gd.prompt_ids(tokenizer, gd.PROMPTS[-1], 20)) == 20  # cut from the start, the turn's end kept
    lengths = [len(gd.prompt_ids(tokenizer, p, 10_000)) for p in gd.PROMPTS]
    assert max(lengths) > 3 * min(lengths)


def test_plain_lm_prompts_are_text(tiny_decoder_path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder_path("gpt2"))
    assert gd.prompt_ids(tokenizer, "Hello there", 100) == tokenizer("Hello there", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="expected a text prompt"):
        gd.encode(tokenizer, [gd.Example({"question": "?"})], 100)


def test_reference_passes_against_itself(llama, gate: GenerationGate) -> None:
    decoder, _ = llama
    verdict = gate.judge(decoder)
    assert verdict.passed, verdict.failures
    assert verdict.metrics["top1_agreement"] == 1.0 and verdict.metrics["mean_kl"] == pytest.approx(0.0, abs=1e-9)
    assert verdict.metrics["greedy_exact"] == 1.0 and verdict.metrics["greedy_prefix"] == 1.0
    assert decoder.live == 0  # every cache released
    assert gate.positions == sum(len(c.tokens) for c in gate.reference) > len(gate.prompts)
    assert all(1 <= len(c.tokens) <= NEW_TOKENS and c.logits.shape[0] == len(c.tokens) for c in gate.reference)


def test_prompts_beyond_the_decoders_slots_go_in_groups(llama, gate: GenerationGate) -> None:
    from squeezer.backends.torch_decoder import TorchDecoder

    decoder, _ = llama
    small = TorchDecoder(decoder.model, max_sequences=2)
    assert greedy(small, gate.prompts[:5], 4) == [c.tokens[:4] for c in gate.reference[:5]]
    assert small.live == 0


def test_greedy_matches_transformers_generate(llama, tiny_decoder_path) -> None:
    from transformers import AutoModelForCausalLM

    from squeezer.testing.tiny_decoders import reference_generate

    decoder, tokenizer = llama
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder_path("llama")).eval()
    prompts = [gd.prompt_ids(tokenizer, p, 200) for p in gd.PROMPTS[:3]]
    for prompt, tokens in zip(prompts, greedy(decoder, prompts, 8)):
        expected = reference_generate(model, prompt, 8)
        assert tokens == expected[: len(tokens)] and (len(tokens) == 8 or tokens[-1] in decoder.eos_token_ids)


def test_broken_candidate_is_rejected_listing_every_failed_metric(llama, gate: GenerationGate) -> None:
    decoder, _ = llama
    verdict = gate.judge(Perturbed(decoder, scale=20.0))
    assert not verdict.passed
    failed = {failure.split()[0] for failure in verdict.failures}
    assert failed == {b.metric for b in TOLERANCES["generation"]}
    assert verdict.metrics["top1_agreement"] < 0.5 and verdict.metrics["mean_kl"] > 1.0
    assert all(any(c in f for c in "<>") for f in verdict.failures)  # each says value and bound
    assert decoder.live == 0


def test_slight_noise_passes_within_the_budget(llama, gate: GenerationGate) -> None:
    decoder, _ = llama
    verdict = gate.judge(Perturbed(decoder, scale=0.05))
    assert verdict.passed, verdict.failures
    assert 0 < verdict.metrics["mean_kl"] < 0.01


def test_budget_scales_the_bounds(llama, gate: GenerationGate) -> None:
    decoder, _ = llama
    loose = GenerationGate(decoder, gate.prompts[:2], 4, budget=0.5)
    assert gate.budget == DEFAULT_BUDGET["text-generation"] and gate.limits["top1_agreement"] == ">= 0.9000"
    assert loose.limits["top1_agreement"] == ">= 0.5000" and list(loose.limits) == [b.metric for b in TOLERANCES["generation"]]
    assert loose.judge(Perturbed(decoder, scale=2.0)).metrics["top1_agreement"] < 1.0


def test_decode_releases_caches_when_the_feed_fails(llama) -> None:
    decoder, _ = llama

    def feed(i: int, position: int, row: np.ndarray) -> int | None:
        if position == 2:
            raise RuntimeError("boom")
        return int(row.argmax())

    with pytest.raises(RuntimeError, match="boom"):
        decode(decoder, [[1, 2, 3], [4, 5]], feed)
    assert decoder.live == 0


def test_metric_helpers() -> None:
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]], dtype=np.float32)
    assert kl_divergence(logits, logits) == pytest.approx([0.0, 0.0], abs=1e-12)
    assert (kl_divergence(logits, logits[::-1]) > 0).all()
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2 and common_prefix([], [1]) == 0
