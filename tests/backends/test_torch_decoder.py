"""The slot-cache decoder: prefill and batched steps against full forwards and against `generate`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from squeezer.backends.decoder import CHUNK
from squeezer.backends.torch_decoder import KVStore, TorchDecoder
from squeezer.sources import ModelSource
from squeezer.testing.tiny_decoders import ARCHS, continue_greedily, reference_generate

PROMPTS = [[5, 9, 33, 101, 7], [44, 12], list(range(20, 57)), [300]]


@pytest.fixture(scope="module", params=ARCHS)
def decoder(request: pytest.FixtureRequest, tiny_decoder_path: Callable[[str], Path]) -> TorchDecoder:  # noqa: F811
    return TorchDecoder.load(ModelSource(request.param, tiny_decoder_path(request.param)), max_sequences=8)


def full_logits(model: Any, ids: list[int]) -> torch.Tensor:
    """Next-token logits of the whole sequence, computed without any cache."""
    with torch.inference_mode():
        return model(torch.tensor([ids]), use_cache=False).logits[0, -1]


def test_prefill_gives_the_full_forwards_logits(decoder: TorchDecoder) -> None:
    handle, logits = decoder.prefill(PROMPTS[0])
    try:
        assert torch.allclose(torch.from_numpy(logits), full_logits(decoder.model, PROMPTS[0]), atol=1e-5)
    finally:
        decoder.release(handle)


def test_batched_steps_over_different_lengths_match_full_forwards(decoder: TorchDecoder) -> None:
    sequences = [list(p) for p in PROMPTS]
    handles = [decoder.prefill(p)[0] for p in sequences]
    try:
        for step in range(6):
            tokens = [(7 * step + 3 * i) % 400 + 5 for i in range(len(sequences))]
            order = list(reversed(range(len(handles))))  # handles in any order; logits come back in that order
            logits = decoder.step([handles[i] for i in order], [tokens[i] for i in order])
            for row, i in enumerate(order):
                sequences[i].append(tokens[i])
                assert torch.allclose(torch.from_numpy(logits[row]), full_logits(decoder.model, sequences[i]), atol=1e-4)
    finally:
        for handle in handles:
            decoder.release(handle)
    assert decoder.live == 0


def test_leaving_sequences_free_their_rows_and_others_continue(decoder: TorchDecoder) -> None:
    sequences = [list(p) for p in PROMPTS[:3]]
    handles = [decoder.prefill(p)[0] for p in sequences]
    decoder.release(handles.pop(0))  # the first row is refilled by the last one
    sequences.pop(0)
    assert decoder.live == 2
    logits = decoder.step(handles, [11, 12])
    for row, (seq, token) in enumerate(zip(sequences, [11, 12])):
        assert torch.allclose(torch.from_numpy(logits[row]), full_logits(decoder.model, seq + [token]), atol=1e-4)
    for handle in handles:
        decoder.release(handle)
    assert decoder.live == 0 and decoder._store.keys == []  # an idle decoder holds no cache


def test_batched_greedy_decoding_equals_generate(decoder: TorchDecoder) -> None:
    steps = 24
    handles, tokens, outputs = [], [], []
    for prompt in PROMPTS:
        handle, logits = decoder.prefill(prompt)
        handles.append(handle)
        tokens.append(int(logits.argmax()))
        outputs.append([tokens[-1]])
    for _ in range(steps - 1):
        tokens = [int(row.argmax()) for row in decoder.step(handles, tokens)]
        for out, token in zip(outputs, tokens):
            out.append(token)
    for handle in handles:
        decoder.release(handle)
    for prompt, out in zip(PROMPTS, outputs):
        expected = reference_generate(decoder.model, prompt, steps)  # may end early, at an EOS token
        assert out[: len(expected)] == expected


def test_eager_attention_uses_an_additive_mask(tiny_decoder_path: Callable[[str], Path]) -> None:  # noqa: F811
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_decoder_path("llama"), attn_implementation="eager")
    decoder = TorchDecoder(model)
    handles = [decoder.prefill(p)[0] for p in PROMPTS[:2]]
    logits = decoder.step(handles, [8, 9])
    assert torch.allclose(torch.from_numpy(logits[1]), full_logits(model, PROMPTS[1] + [9]), atol=1e-4)


def test_loads_from_a_plain_path(tiny_decoder_path: Callable[[str], Path]) -> None:  # noqa: F811
    decoder = TorchDecoder.load(tiny_decoder_path("gpt2"))
    assert decoder.eos_token_ids == {0} and decoder.max_sequences == 16


def test_model_facts_and_misuse(decoder: TorchDecoder) -> None:
    assert decoder.max_length == 256 and decoder.eos_token_ids
    with pytest.raises(ValueError, match="prompt"):
        decoder.prefill(list(range(256)))
    handles = [decoder.prefill(p)[0] for p in PROMPTS[:2]]
    try:
        with pytest.raises(ValueError, match="each of the 2 live sequences"):
            decoder.step(handles[:1], [3])
        with pytest.raises(KeyError):
            decoder.release(12345)
    finally:
        for handle in handles:
            decoder.release(handle)


def test_store_grows_by_chunks_and_shrinks_when_oversized() -> None:
    store = KVStore(torch)
    store.fit(3, 10, 4096)
    assert (store.rows, store.capacity) == (4, CHUNK)
    keys, _ = store.layer(0, torch.zeros(1, 2, 1, 8))
    keys[2, :, 5] = 1.0
    store.fit(5, CHUNK + 1, 4096)
    assert (store.rows, store.capacity) == (8, 2 * CHUNK) and store.keys[0][2, 0, 5, 0] == 1.0  # kept on growth
    store.fit(1, 10, 4096)
    assert (store.rows, store.capacity) == (1, CHUNK)  # 16x what one short sequence needs: shrunk
    small = KVStore(torch)
    small.fit(1, 10, 100)
    assert small.capacity == 100  # never past the model's context


def test_prompts_prefilled_together_decode_exactly_as_generate(decoder: TorchDecoder) -> None:
    """Different lengths in one right-padded prefill: each row's greedy tokens are still generate's."""
    steps = 24
    results = decoder.prefill_many(PROMPTS)
    outputs = continue_greedily(decoder, results, steps)
    for prompt, (_, logits) in zip(PROMPTS, results):
        assert torch.allclose(torch.from_numpy(logits), full_logits(decoder.model, prompt), atol=1e-4)
    for prompt, out in zip(PROMPTS, outputs):
        expected = reference_generate(decoder.model, prompt, steps)
        assert out[: len(expected)] == expected


def test_prefill_many_joins_a_running_batch_and_checks_its_prompts(decoder: TorchDecoder) -> None:
    first, _ = decoder.prefill(PROMPTS[2])
    try:
        pairs = decoder.prefill_many(PROMPTS[:2])
        assert decoder.live == 3 and len({first, *(h for h, _ in pairs)}) == 3
        logits = decoder.step([first, *(h for h, _ in pairs)], [7, 8, 9])
        for row, (prompt, token) in enumerate(zip([PROMPTS[2], *PROMPTS[:2]], [7, 8, 9])):
            assert torch.allclose(torch.from_numpy(logits[row]), full_logits(decoder.model, prompt + [token]), atol=1e-4)
        for handle, _ in pairs:
            decoder.release(handle)
        with pytest.raises(ValueError, match="prompt"):
            decoder.prefill_many([[1, 2], []])
        with pytest.raises(RuntimeError, match="slots"):
            decoder.prefill_many([[1]] * decoder.max_sequences)
        assert decoder.live == 1  # a refused batch takes no row
    finally:
        decoder.release(first)


def test_memory_counts_the_weights_and_the_live_cache(decoder: TorchDecoder) -> None:
    """The memory budget's measure: float32 weights as loaded, plus the KV store while sequences hold it."""
    tensors = [*decoder.model.parameters(), *decoder.model.buffers()]  # GPT-2's buffers hold its causal masks
    idle = decoder.memory_bytes
    assert idle == sum(t.numel() * t.element_size() for t in tensors) > 0
    handle, _ = decoder.prefill(PROMPTS[2])
    try:
        store = decoder._store
        assert store.capacity >= len(PROMPTS[2]) and decoder.memory_bytes - idle == store.nbytes > 0
    finally:
        decoder.release(handle)
    assert decoder.memory_bytes == idle  # the last sequence left: the store is freed
