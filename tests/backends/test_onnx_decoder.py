"""The ONNX decoder: the slot cache on GroupQueryAttention's shared buffers, against transformers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers

from squeezer.backends.decoder import CHUNK
from squeezer.backends.onnx_decoder import KVCache, OnnxDecoder
from squeezer.compiler.decoder_graph import DecoderWeights, build_decoder
from squeezer.testing.tiny_decoders import continue_greedily, reference_generate
from tests.compiler.test_decoder_graph import tiny_causal_lm

PROMPTS = [[5, 9, 33, 101, 7], [44, 12], list(range(20, 57)), [250]]


def full_logits(model: Any, ids: list[int]) -> np.ndarray:
    """Next-token logits of the whole sequence, computed by transformers without any cache."""
    with torch.inference_mode():
        return model(torch.tensor([ids]), use_cache=False).logits[0, -1].numpy()


def close(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, atol=2e-4, rtol=1e-4))


@pytest.fixture(scope="module", params=["llama", "qwen2", "mistral"])
def pair(request: pytest.FixtureRequest, tiny_decoder_path: Callable[[str], Path],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, OnnxDecoder]]:
    """(transformers model, OnnxDecoder on its float32 graph); Llama is the tokenizer-backed tiny model."""
    if request.param == "llama":
        path = tiny_decoder_path("llama")
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    else:
        model = tiny_causal_lm(request.param)
    folder = tmp_path_factory.mktemp(f"decoder-{request.param}")
    build_decoder(model, folder, DecoderWeights())
    decoder = OnnxDecoder.load(folder, max_sequences=8)
    yield model, decoder
    decoder.close()


def test_prefill_gives_the_full_forwards_logits(pair: tuple[Any, OnnxDecoder]) -> None:
    model, decoder = pair
    for prompt in PROMPTS:
        handle, logits = decoder.prefill(prompt)
        decoder.release(handle)
        assert logits.shape == (model.config.vocab_size,) and close(logits, full_logits(model, prompt))


def test_batched_steps_over_different_lengths_match_full_forwards(pair: tuple[Any, OnnxDecoder]) -> None:
    model, decoder = pair
    sequences = [list(p) for p in PROMPTS]
    handles = [h for h, _ in decoder.prefill_many(sequences)]
    try:
        for step in range(6):
            tokens = [(7 * step + 3 * i) % 290 + 5 for i in range(len(sequences))]
            order = [2, 0, 3, 1]  # handles in any order; logits come back in that order
            logits = decoder.step([handles[i] for i in order], [tokens[i] for i in order])
            for row, i in enumerate(order):
                sequences[i].append(tokens[i])
                assert close(logits[row], full_logits(model, sequences[i]))
    finally:
        for handle in handles:
            decoder.release(handle)
    assert decoder.live == 0 and decoder._store.arrays == []  # an idle decoder holds no cache


def test_prompts_prefilled_together_decode_exactly_as_generate(pair: tuple[Any, OnnxDecoder]) -> None:
    """Different lengths in one right-padded prefill: each row's greedy tokens are still generate's."""
    model, decoder = pair
    steps = 24
    results = decoder.prefill_many(PROMPTS)
    outputs = continue_greedily(decoder, results, steps)
    for prompt, (_, logits) in zip(PROMPTS, results):
        assert close(logits, full_logits(model, prompt))
    for prompt, out in zip(PROMPTS, outputs):
        expected = reference_generate(model, prompt, steps)  # may end early, at an EOS token
        assert out[: len(expected)] == expected


def test_sequences_joining_and_leaving_a_running_batch_decode_as_generate(pair: tuple[Any, OnnxDecoder]) -> None:
    """Continuous batching: A alone, B and C join while A runs, A leaves (C moves into its row), D joins."""
    model, decoder = pair
    steps = 16
    live: dict[int, tuple[list[int], list[int]]] = {}  # handle -> (prompt, generated)

    def join(*prompts: list[int]) -> None:
        for prompt, (handle, logits) in zip(prompts, decoder.prefill_many(prompts)):
            live[handle] = (prompt, [int(logits.argmax())])

    def advance(count: int) -> None:
        for _ in range(count):
            handles = list(live)[::-1]
            logits = decoder.step(handles, [live[h][1][-1] for h in handles])
            for handle, row in zip(handles, logits):
                live[handle][1].append(int(row.argmax()))

    def leave(handle: int) -> None:
        decoder.release(handle)
        prompt, out = live.pop(handle)
        expected = reference_generate(model, prompt, len(out))
        assert out[: len(expected)] == expected

    join(PROMPTS[0])
    advance(3)
    join(PROMPTS[1], PROMPTS[2])
    advance(4)
    leave(next(iter(live)))
    advance(5)
    join(PROMPTS[3])
    advance(steps - 5)
    for handle in list(live):
        leave(handle)
    assert decoder.live == 0


def test_prompts_continuing_cached_sequences_decode_as_generate(pair: tuple[Any, OnnxDecoder]) -> None:
    """Prefix caching: a released sequence's keys serve later prompts that begin the same way, in one
    prefill_many with a prompt that misses; each still gets the full forward's logits and generate's tokens."""
    model, plain = pair
    decoder = OnnxDecoder(plain._session, plain.meta, 8, prefix_cache_bytes=1 << 24)  # the same graph, its own cache
    first = PROMPTS[2]
    handle, logits = decoder.prefill(first)
    generated = [int(logits.argmax())]
    for _ in range(5):
        generated.append(int(decoder.step([handle], [generated[-1]])[0].argmax()))
    decoder.release(handle)  # cached: the prompt and the 5 tokens fed back (the 6th never ran)
    assert len(decoder.prefix_cache) == 1
    prompts = [first[:20] + [3, 4], first + generated[:3] + [9], PROMPTS[0], first]
    results = decoder.prefill_many(prompts)
    cache = decoder.prefix_cache
    assert (cache.hits, cache.misses, cache.tokens_reused) == (3, 2, 20 + len(first) + 3 + len(first) - 1)  # misses: first, PROMPTS[0]
    assert [decoder.cached_tokens(h) for h, _ in results] == [20, len(first) + 3, 0, len(first) - 1]
    others = decoder.prefill_many(prompts, ["tenant-b"] * len(prompts))  # another scope: nothing of the first one's
    assert [decoder.cached_tokens(h) for h, _ in others] == [0, 0, 0, 0]
    for (_, mine), (handle, theirs) in zip(results, others):
        assert close(mine, theirs)
        decoder.release(handle)
    outputs = continue_greedily(decoder, results, 12)
    for prompt, (_, logits) in zip(prompts, results):
        assert close(logits, full_logits(model, prompt))
    for prompt, out in zip(prompts, outputs):
        expected = reference_generate(model, prompt, len(out))  # may end early, at an EOS token
        assert out[: len(expected)] == expected
    assert decoder.live == 0 and decoder._store.arrays == [] and len(cache) >= 1


def test_model_facts_and_misuse(pair: tuple[Any, OnnxDecoder]) -> None:
    model, decoder = pair
    assert decoder.max_length == 256 and decoder.eos_token_ids == set(model.generation_config.eos_token_id)
    assert decoder.max_sequences == 8
    with pytest.raises(ValueError, match="prompt"):
        decoder.prefill(list(range(256)))
    handles = [decoder.prefill(p)[0] for p in PROMPTS[:2]]
    try:
        with pytest.raises(ValueError, match="each of the 2 live sequences"):
            decoder.step(handles[:1], [3])
        with pytest.raises(KeyError):
            decoder.step([handles[0], 12345], [3, 4])
        with pytest.raises(KeyError):
            decoder.release(12345)
        with pytest.raises(ValueError, match="prompt"):
            decoder.prefill_many([[1, 2], []])
        with pytest.raises(RuntimeError, match="slots"):
            decoder.prefill_many([[1]] * decoder.max_sequences)
        assert decoder.live == 2  # a refused batch takes no row
    finally:
        for handle in handles:
            decoder.release(handle)


def test_a_sequence_stops_at_the_context(tmp_path: Path) -> None:
    model = tiny_causal_lm("llama", max_position_embeddings=12)
    build_decoder(model, tmp_path, DecoderWeights())
    decoder = OnnxDecoder.load(tmp_path, threads=1)
    handle, logits = decoder.prefill(list(range(3, 14)))  # 11 tokens: one step left
    decoder.step([handle], [int(logits.argmax())])
    with pytest.raises(ValueError, match="context of 12"):
        decoder.step([handle], [5])
    decoder.release(handle)
    decoder.warmup()
    assert decoder.live == 0


def test_store_grows_by_chunks_and_shrinks_when_oversized() -> None:
    store = KVCache(layers=1, kv_heads=2, head_dim=8)
    assert store.fit(3, 10, 4096) and (store.rows, store.capacity) == (4, CHUNK)
    store.arrays[0][2, :, 5] = 1.0
    assert not store.fit(4, 20, 4096)  # fits: nothing moves
    store.fit(5, CHUNK + 1, 4096)
    assert (store.rows, store.capacity) == (8, 2 * CHUNK) and store.arrays[0][2, 0, 5, 0] == 1.0  # kept on growth
    store.fit(1, 10, 4096)
    assert (store.rows, store.capacity) == (1, CHUNK)  # 16x what one short sequence needs: shrunk
    small = KVCache(layers=1, kv_heads=2, head_dim=8)
    small.fit(1, 10, 100)
    assert small.capacity == 100  # never past the model's context


def test_growing_the_store_mid_decode_keeps_every_cache(tmp_path: Path) -> None:
    """Rows double when sequences join and columns grow past a chunk: the step rebinds the moved buffers."""
    model = tiny_causal_lm("llama", max_position_embeddings=600)
    build_decoder(model, tmp_path, DecoderWeights())
    decoder = OnnxDecoder.load(tmp_path, max_sequences=4)
    first = list(range(3, 250))
    handle, logits = decoder.prefill(first)
    sequences = {handle: first + [int(logits.argmax())]}
    for prompt in ([7, 8, 9], [10, 11]):
        h, logits = decoder.prefill(prompt)
        sequences[h] = prompt + [int(logits.argmax())]
    for _ in range(12):  # the first sequence crosses 256 columns
        handles = list(sequences)
        logits = decoder.step(handles, [sequences[h][-1] for h in handles])
        for h, row in zip(handles, logits):
            assert close(row, full_logits(model, sequences[h]))
            sequences[h].append(int(row.argmax()))
    assert decoder._store.capacity == 2 * CHUNK


@pytest.mark.parametrize(("bits", "fold"), [(8, False), (4, False), (4, True)])
def test_quantized_graphs_decode_close_to_the_float_one(bits: int, fold: bool, tmp_path: Path) -> None:
    """Random tiny weights are a harsh case for quantization; int8 must still mostly agree on the top token."""
    model = tiny_causal_lm("llama")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.3)  # tamer logits than the exactness tests need: fewer near-ties to flip
    build_decoder(model, tmp_path, DecoderWeights(bits=bits, quantize_lm_head=True, fold_offsets=fold))
    decoder = OnnxDecoder.load(tmp_path)
    agree = total = 0
    for prompt in PROMPTS:
        sequence = list(prompt)
        handle, logits = decoder.prefill(sequence)
        for _ in range(8):
            expected = int(full_logits(model, sequence).argmax())
            agree, total = agree + (int(logits.argmax()) == expected), total + 1
            sequence.append(expected)  # teacher-forced: one disagreement does not derail the rest
            logits = decoder.step([handle], [expected])[0]
        decoder.release(handle)
    assert agree / total >= (0.9 if bits == 8 else 0.6)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory, smollm2_file: tuple[Path, str]) -> tuple[Any, list[list[int]], Path]:
    """(SmolLM2-135M-Instruct in float32 from its GGUF, two tokenized prompts, a folder to build graphs in)."""
    folder, name = smollm2_file
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=name, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), gguf_file=name)
    texts = ["The capital of France is", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\""]
    return model, [tokenizer(t)["input_ids"] for t in texts], tmp_path_factory.mktemp("smollm2")


@pytest.mark.slow
def test_smollm2_float_graph_decodes_exactly_as_generate(smollm2: tuple[Any, list[list[int]], Path]) -> None:
    model, prompts, folder = smollm2
    build_decoder(model, folder / "f32", DecoderWeights())
    decoder = OnnxDecoder.load(folder / "f32")
    results = decoder.prefill_many(prompts)
    handles, tokens = [h for h, _ in results], [int(logits.argmax()) for _, logits in results]
    outputs = [[token] for token in tokens]
    for _ in range(31):
        tokens = [int(row.argmax()) for row in decoder.step(handles, tokens)]
        for out, token in zip(outputs, tokens):
            out.append(token)
    for prompt, out in zip(prompts, outputs):
        expected = reference_generate(model, prompt, 32)
        assert out[: len(expected)] == expected


@pytest.mark.slow
@pytest.mark.parametrize("fold", [False, True])
def test_smollm2_int4_graph_mostly_agrees_with_the_float_model(smollm2: tuple[Any, list[list[int]], Path], fold: bool) -> None:
    model, prompts, folder = smollm2
    build_decoder(model, folder / f"int4-{fold}", DecoderWeights(bits=4, quantize_lm_head=True, fold_offsets=fold))
    decoder = OnnxDecoder.load(folder / f"int4-{fold}")
    agree = total = 0
    for prompt in prompts:
        expected = reference_generate(model, prompt, 32)
        handle, logits = decoder.prefill(prompt)
        for token in expected:  # teacher-forced on the float model's greedy path
            agree, total = agree + (int(logits.argmax()) == token), total + 1
            logits = decoder.step([handle], [token])[0]
        decoder.release(handle)
    assert agree / total >= 0.75


def test_memory_counts_the_graph_the_live_cache_and_the_prefix_cache(tmp_path: Path) -> None:
    model = tiny_causal_lm("llama")
    build_decoder(model, tmp_path, DecoderWeights())
    decoder = OnnxDecoder.load(tmp_path, max_sequences=4, prefix_cache_bytes=1 << 20)
    try:
        weights = sum(p.numel() * 4 for p in model.parameters())
        idle = decoder.memory_bytes
        assert idle >= weights  # the float32 graph's external data
        handle, _ = decoder.prefill(PROMPTS[2])
        live = decoder.memory_bytes
        assert live - idle >= decoder._store.nbytes > 0
        decoder.release(handle)
        kept = decoder.prefix_cache.nbytes
        assert kept > 0 and decoder.memory_bytes == idle + kept  # the row is freed, its prefix is kept
    finally:
        decoder.close()
