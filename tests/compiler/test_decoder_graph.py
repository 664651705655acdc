"""The compiled decoder graph: refusals, files, quantization packing, and logits against transformers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers

from squeezer.backends.decoder import context_length, eos_ids
from squeezer.compiler.decoder_graph import (
    DecoderWeights,
    _Graph,
    build_decoder,
    unsupported_reason,
)
from squeezer.compiler.decoder_quant import (
    dequantize_blockwise,
    matmul_nbits,
    quantize_blockwise,
)

PROMPTS = [[5, 9, 33, 101, 7], [44, 12], list(range(20, 57)), [250]]
CONFIGS = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config, "mistral": transformers.MistralConfig}


def tiny_causal_lm(arch: str, **overrides: Any) -> Any:
    """A seeded tiny random `arch` model (grouped-query attention; Qwen2's q/k/v biases; tied head for Qwen2).

    Large random weights (and biases) give peaked logits, so greedy comparisons have no near-ties.
    """
    settings: dict[str, Any] = {
        "vocab_size": 300, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
        "bos_token_id": 0, "eos_token_id": [1, 2], "tie_word_embeddings": arch == "qwen2",
    }
    config = CONFIGS[arch](**{**settings, **overrides})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1 or name.endswith("bias"):
                p.normal_(0.0, 0.5)
    return model.eval()


def run_graph(folder: Path, prompt: list[int]) -> np.ndarray:
    """Logits at every position of one prompt, from the graph alone (empty past, as a first prompt)."""
    import onnxruntime as ort

    meta = json.loads((folder / "decoder.json").read_text())
    session = ort.InferenceSession(str(folder / "decoder.onnx"), providers=["CPUExecutionProvider"])
    empty = np.zeros((1, meta["kv_heads"], 0, meta["head_dim"]), dtype=np.float32)
    feeds: dict[str, np.ndarray] = {
        "input_ids": np.array([prompt], dtype=np.int64),
        "seqlens_k": np.array([len(prompt) - 1], dtype=np.int32),
        "total_sequence_length": np.array(len(prompt), dtype=np.int32),
        "logits_index": np.arange(len(prompt), dtype=np.int64),
    }
    for i in range(meta["num_layers"]):
        feeds[f"past_key_{i}"] = feeds[f"past_value_{i}"] = empty
    return session.run(["logits"], feeds)[0]


def torch_logits(model: Any, prompt: list[int]) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.tensor([prompt]), use_cache=False).logits[0].float().numpy()


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_float_graph_matches_transformers_at_every_position(arch: str, tmp_path: Path) -> None:
    model = tiny_causal_lm(arch)
    build_decoder(model, tmp_path, DecoderWeights())
    for prompt in PROMPTS:
        assert np.allclose(run_graph(tmp_path, prompt), torch_logits(model, prompt), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("scaling", [{"rope_type": "linear", "factor": 2.0},
                                     {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64}])
def test_static_rope_scalings_are_compiled_from_the_models_own_frequencies(scaling: dict, tmp_path: Path) -> None:
    model = tiny_causal_lm("llama", rope_scaling=scaling)
    build_decoder(model, tmp_path, DecoderWeights())
    prompt = list(range(3, 120))
    assert np.allclose(run_graph(tmp_path, prompt), torch_logits(model, prompt), atol=1e-4, rtol=1e-4)


def test_files_and_facts(tiny_decoder_path: Callable[[str], Path], tmp_path: Path) -> None:
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_decoder_path("llama"), dtype=torch.float32)
    weights = DecoderWeights(bits=4, block_size=16)
    graph = build_decoder(model, tmp_path, weights)
    assert graph == tmp_path / "decoder.onnx" and (tmp_path / "decoder.onnx.data").stat().st_size > 0
    meta = json.loads((tmp_path / "decoder.json").read_text())
    assert meta["max_length"] == context_length(model.config) == 256
    assert set(meta["eos_token_ids"]) == eos_ids(model) and len(meta["eos_token_ids"]) == 2
    facts = (meta["num_layers"], meta["kv_heads"], meta["head_dim"], meta["vocab_size"])
    assert facts == (2, 2, 16, model.config.vocab_size)
    assert meta["weights"] == {"bits": 4, "block_size": 16, "accuracy_level": 4, "quantize_lm_head": False,
                               "head_bits": 8, "scheme": None, "fold_offsets": False, "int8_activations": False,
                               "smoothing": [], "row_scaled": [], "int8_weight_bits": 8}
    assert meta["smoothing"] == {}
    build_decoder(model, tmp_path, weights)  # rebuilding in place rewrites the data file, never appends to it
    assert (tmp_path / "decoder.onnx.data").stat().st_size < 2 * 1024 * 1024


def test_unsupported_models_are_refused_with_a_reason(tmp_path: Path) -> None:
    assert unsupported_reason(transformers.LlamaConfig()) is None
    assert "gpt2" in unsupported_reason(transformers.GPT2Config())  # type: ignore[operator]
    dynamic = transformers.LlamaConfig(rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    assert "dynamic" in unsupported_reason(dynamic)  # type: ignore[operator]
    assert "gelu" in unsupported_reason(transformers.LlamaConfig(hidden_act="gelu"))  # type: ignore[operator]
    gpt2 = transformers.AutoModelForCausalLM.from_config(
        transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50, n_positions=32))
    with pytest.raises(ValueError, match="gpt2"):
        build_decoder(gpt2, tmp_path, DecoderWeights())
    with pytest.raises(ValueError, match="bits"):
        DecoderWeights(bits=3)


@pytest.mark.parametrize(("bits", "scheme"), [(4, "minmax"), (4, "asymmetric"), (8, "symmetric"), (8, "minmax")])
@pytest.mark.parametrize(("k", "block"), [(64, 32), (80, 16), (200, 64)])  # whole, odd and padded block counts
def test_matmul_nbits_packing_is_what_the_op_multiplies_by(bits: int, scheme: str, k: int, block: int) -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(48, k)).astype(np.float32)
    x = rng.normal(size=(3, k)).astype(np.float32)
    quantized = quantize_blockwise(weight, bits, block, scheme)
    dequantized = dequantize_blockwise(quantized, bits, k)
    assert np.abs(dequantized - weight).max() <= quantized.scales.max() / 2 + 1e-6  # round to nearest within the block
    assert np.allclose(run_linear(weight, x, bits, block, scheme), x @ dequantized.T, atol=1e-4)


def test_projections_with_the_same_input_width_share_one_block_sum_matrix() -> None:
    rng = np.random.default_rng(0)
    graph = _Graph()
    for name, (n, k) in {"a": (48, 64), "b": (16, 64), "c": (48, 96)}.items():
        matmul_nbits(graph, "x", rng.normal(size=(n, k)).astype(np.float32), name, 4, 32, accuracy=0, scheme="minmax")
    names = [init.name for init in graph.initializers]
    assert sorted(n for n in names if n.startswith("block_sum")) == ["block_sum.64x32", "block_sum.96x32"]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(("bits", "k", "block"), [(4, 128, 32), (4, 96, 16), (8, 128, 32)])
def test_folded_offsets_ride_in_the_matmul_to_a_thousandth_of_a_step(bits: int, k: int, block: int) -> None:
    """min/max offsets as digit columns of the one MatMulNBits: no float product or Add of their own, and the
    product within ~1/1000 of a weight step of the exact one (the digits' leftover, times the block sums)."""
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(40, k)).astype(np.float32)  # blocks straddle zero, as trained weights do
    x = rng.normal(size=(2, 3, k)).astype(np.float32)
    quantized = quantize_blockwise(weight, bits, block, "minmax")
    exact = x @ dequantize_blockwise(quantized, bits, k).T
    graph = _Graph()
    matmul_nbits(graph, "x", weight, "linear", bits, block, accuracy=0, scheme="minmax", fold=True)
    assert [node.op_type for node in graph.nodes] == ["MatMul", "Concat", "MatMulNBits"]
    folded = run_linear(weight, x, bits, block, "minmax", fold=True)
    sums = np.abs(x.reshape(2, 3, k // block, block).sum(axis=-1)).sum(axis=-1)  # what the leftover multiplies
    step = quantized.scales.max()
    assert np.all(np.abs(folded - exact) <= sums[..., None] * step / 400 + 1e-4)  # offsets within a step, to ~1/450 of it
    assert not np.allclose(folded, exact, atol=1e-7)  # it is an approximation, so the check above means something
    unfolded = _Graph()  # a grid without offsets is the same graph either way
    matmul_nbits(unfolded, "x", weight, "linear", bits, block, accuracy=0, scheme="symmetric", fold=True)
    assert [node.op_type for node in unfolded.nodes] == ["MatMulNBits"]


def run_linear(weight: np.ndarray, x: np.ndarray, bits: int, block: int, scheme: str, fold: bool = False) -> np.ndarray:
    """x @ W.T through the nodes `matmul_nbits` emits, on ONNX Runtime with float compute."""
    graph = _Graph()
    out = matmul_nbits(graph, "x", weight, "linear", bits, block, accuracy=0, scheme=scheme, fold=fold)
    return run_emitted(graph, out, x)


def run_emitted(graph: _Graph, out: str, x: np.ndarray) -> np.ndarray:
    """Run the nodes a builder emitted into `graph`, from input "x" to `out`, on ONNX Runtime."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = helper.make_model(
        helper.make_graph(graph.nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], graph.initializers),
        opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)],
    )
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_already_quantized_weights_come_back_exactly() -> None:
    """GGUF Q4_1 blocks (min + d * q, q in 0..15) and Q8_0 blocks (d * q, |q| <= 127) are reproduced, not re-rounded."""
    rng = np.random.default_rng(1)
    n, k = 40, 128
    mins = rng.normal(size=(n, k // 32, 1)).astype(np.float32)
    steps = rng.uniform(0.01, 0.1, size=(n, k // 32, 1)).astype(np.float32)
    levels = rng.integers(0, 16, size=(n, k // 32, 32))
    levels[:, :, 0], levels[:, :, 1] = 0, 15  # Q4_1 maps each block's min to 0 and its max to 15
    q4_1 = (mins + steps * levels).astype(np.float32).reshape(n, k)
    q8_0 = (steps * rng.integers(-127, 128, size=(n, k // 32, 32))).astype(np.float32)
    q8_0[:, :, 0] = steps[:, :, 0] * 127  # the block's largest magnitude sets d
    q8_0 = q8_0.reshape(n, k)
    x = rng.normal(size=(2, 3, k)).astype(np.float32)
    for weight, bits, scheme in ((q4_1, 4, "minmax"), (q8_0, 8, "symmetric")):
        assert np.allclose(dequantize_blockwise(quantize_blockwise(weight, bits, 32, scheme), bits, k), weight, atol=1e-6)
        assert np.allclose(run_linear(weight, x, bits, 32, scheme), x @ weight.T, atol=1e-4)
    rerounded = dequantize_blockwise(quantize_blockwise(q4_1, 4, 32, "asymmetric"), 4, k)
    assert np.abs(rerounded - q4_1).max() > 1e-3  # an integer zero point alone cannot meet the block minimum


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_graph_computes_the_dequantized_model(bits: int, tmp_path: Path) -> None:
    """With float compute (accuracy_level 0), an n-bit graph is exactly the model with dequantized weights."""
    model = tiny_causal_lm("llama")
    build_decoder(model, tmp_path, DecoderWeights(bits=bits, accuracy_level=0, quantize_lm_head=True))
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight.numpy()
                head = name == "lm_head"  # the head gets head_bits (8 by default) on its own grid
                quantized = quantize_blockwise(w, 8 if head else bits, 32)
                module.weight.copy_(torch.from_numpy(dequantize_blockwise(quantized, 8 if head else bits, w.shape[1])))
    prompt = PROMPTS[2]
    assert np.allclose(run_graph(tmp_path, prompt), torch_logits(model, prompt), atol=1e-3, rtol=1e-3)
