"""SmoothQuant: the smoothed model computes what the model did, and the grid search takes the outliers away."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from squeezer.compiler.decoder_int8 import fake_quantize_activations, quantize_per_channel
from squeezer.compiler.smoothing import capture_inputs, choose_scales, smooth
from tests.compiler.test_decoder_graph import PROMPTS, tiny_causal_lm, torch_logits


@pytest.mark.parametrize("arch", ["llama", "qwen2"])  # qwen2: q/k/v biases and a head tied to the embeddings
def test_smoothing_changes_nothing_in_float(arch: str) -> None:
    model = tiny_causal_lm(arch)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    smoothed, alphas = smooth(model, PROMPTS[:2], (0.5,), ("down_proj",))
    assert set(alphas) == {f"layers.{i}.{p}" for i in range(2) for p in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")} | {"lm_head"}
    assert set(alphas.values()) == {0.5}
    for prompt in PROMPTS:
        assert np.allclose(torch_logits(smoothed, prompt), torch_logits(model, prompt), rtol=1e-4, atol=1e-3)
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())  # the source is untouched
    norm = smoothed.model.layers[0].input_layernorm.weight
    assert not torch.equal(norm, model.model.layers[0].input_layernorm.weight)  # something did move
    assert torch.equal(smoothed.model.embed_tokens.weight, model.model.embed_tokens.weight)  # the head was untied


def test_capture_records_every_linear_input_row() -> None:
    model = tiny_causal_lm("llama")
    inputs = capture_inputs(model, [PROMPTS[0], PROMPTS[3]])
    assert inputs["model.layers.1.mlp.down_proj"].shape == (len(PROMPTS[0]) + len(PROMPTS[3]), 128)
    assert inputs["lm_head"].shape == (6, 64)


def test_the_grid_search_moves_an_outlier_channel_into_the_weights() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 32)).astype(np.float32)
    x[:, 5] *= 100.0  # one channel a hundred times the others, as after an RMSNorm
    weight = rng.standard_normal((16, 32)).astype(np.float32)

    def error(alpha: float) -> float:
        _, s = choose_scales(x, weight, (alpha,), False)
        q, scales = quantize_per_channel(weight * s)
        return float(np.mean((fake_quantize_activations(x / s, False) @ (q * scales[:, None]).T - x @ weight.T) ** 2))

    alpha, s = choose_scales(x, weight, (0.0, 0.5), False)
    assert alpha == 0.5 and int(np.argmax(s)) == 5
    assert error(0.5) < error(0.0) / 10
