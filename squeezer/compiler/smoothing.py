"""SmoothQuant: move activation outliers into the weights before int8 activations (`decoder_int8`).

x @ W.T == (x / s) @ (W * s).T for any positive per-channel s, so dividing each input channel j of a linear
layer by s_j and multiplying the weights' column j by s_j changes nothing in float (Xiao et al., 2023). With
s_j = max|x_j|^alpha / max|W_j|^(1 - alpha) the activations' few huge channels shrink and the weights, which
are quantized per output channel and tolerate it, take them. The division is folded where it costs nothing:

    q/k/v (packed)   reads input_layernorm's output: its weight divides by s
    gate/up (packed) reads post_attention_layernorm's output: likewise
    o_proj           reads attention outputs, weighted sums of v: v's rows (and bias) divide by s; heads that
                     share a key/value head share its s (the larger of their factors)
    down             reads silu(gate) * up: up's rows (and bias) divide by s
    lm head          reads the final norm's output: likewise (a tied head is untied first)

(Measured on SmolLM2 with per-tensor int8 activations: smoothing cuts o_proj's relative output error about
tenfold, 5e-3 to 4e-4, where scaling its rows one by one only halves it.) alpha is picked per layer
from the recipe's grid: the one whose simulated int8 product, computed as the graph will compute it
(`decoder_int8.fake_quantize_activations`, per-channel s8 weights), is closest to the float product on
activations captured from calibration prompts (`validation_data.calibration_texts`, never the gate's). A grid
holding 0 can keep a layer as it was. A pure transform: the model passed in is not modified.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from squeezer.compiler.decoder_int8 import QMAX, fake_quantize_activations, quantize_per_channel


def capture_inputs(model: Any, prompts: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """Every nn.Linear's input rows [tokens, in_features] over the prompts (one forward each), by module name."""
    import torch

    captured: dict[str, list[np.ndarray]] = {}

    def hook(name: str) -> Any:
        def record(module: Any, inputs: tuple[Any, ...], output: Any) -> None:
            x = inputs[0].detach().float()
            captured.setdefault(name, []).append(x.reshape(-1, x.shape[-1]).numpy())
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear)]
    try:
        with torch.inference_mode():
            for prompt in prompts:
                model(torch.tensor([list(prompt)]), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return {name: np.concatenate(rows) for name, rows in captured.items()}


def choose_scales(x: np.ndarray, weight: np.ndarray, alphas: Sequence[float], row_scaled: bool,
                  heads: tuple[int, int] | None = None, qmax: int = QMAX) -> tuple[float, np.ndarray]:
    """(alpha, s [K]) of the grid whose smoothed int8 product of x [T, K] and weight [N, K] errs least.

    `heads` (key/value heads, query heads per key/value head) ties s across the query heads of a group, for
    inputs laid out [heads, head_dim] whose divisor is folded into a shared v projection.
    """
    reference = x @ weight.T
    act = _tie(np.maximum(np.abs(x).max(axis=0), 1e-5), heads)
    wmax = _tie(np.maximum(np.abs(weight).max(axis=0), 1e-5), heads)
    best: tuple[float, float, np.ndarray] | None = None
    for alpha in alphas:
        s = np.maximum(act**alpha / wmax ** (1.0 - alpha), 1e-5).astype(np.float32)
        q, scales = quantize_per_channel(weight * s, qmax)
        approx = fake_quantize_activations(x / s, row_scaled) @ (q * scales[:, None]).T
        error = float(np.mean((approx - reference) ** 2))
        if best is None or error < best[0]:
            best = (error, alpha, s)
    assert best is not None, "the smoothing grid is empty"
    return best[1], best[2]


def _tie(values: np.ndarray, heads: tuple[int, int] | None) -> np.ndarray:
    """Per-channel values made equal, at their largest, across the query heads of each key/value group."""
    if heads is None:
        return values
    grouped = values.reshape(heads[0], heads[1], -1)
    return np.broadcast_to(grouped.max(axis=1, keepdims=True), grouped.shape).reshape(-1)


def smooth(model: Any, prompts: Sequence[Sequence[int]], alphas: Sequence[float],
           row_scaled: Sequence[str] = (), qmax: int = QMAX) -> tuple[Any, dict[str, float]]:
    """A smoothed copy of a Llama-family model and the alpha chosen for each projection group.

    `row_scaled` names the projections (`decoder_graph.PROJECTIONS`) whose input rows the graph scales one by
    one, so that their simulation matches.
    """
    import torch

    inputs = capture_inputs(model, prompts)
    model = copy.deepcopy(model)
    chosen: dict[str, float] = {}

    def scales(name: str, key: str, weights: list[Any], projection: str,
               heads: tuple[int, int] | None = None) -> torch.Tensor:
        weight = np.concatenate([w.detach().float().numpy() for w in weights])
        chosen[name], s = choose_scales(inputs[key], weight, alphas, projection in row_scaled, heads, qmax)
        return torch.from_numpy(s)

    config = model.config
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    group = (kv_heads, config.num_attention_heads // kv_heads)

    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            attn, mlp, key = layer.self_attn, layer.mlp, f"model.layers.{i}"
            qkv = [attn.q_proj, attn.k_proj, attn.v_proj]
            s = scales(f"layers.{i}.qkv_proj", f"{key}.self_attn.q_proj", [p.weight for p in qkv], "qkv_proj")
            _fold_into_norm(layer.input_layernorm, qkv, s)
            s = scales(f"layers.{i}.o_proj", f"{key}.self_attn.o_proj", [attn.o_proj.weight], "o_proj", group)
            _divide_rows(attn.v_proj, s.reshape(group[0], group[1], -1)[:, 0, :].reshape(-1))
            attn.o_proj.weight.mul_(s)
            s = scales(f"layers.{i}.gate_up_proj", f"{key}.mlp.gate_proj", [mlp.gate_proj.weight, mlp.up_proj.weight],
                       "gate_up_proj")
            _fold_into_norm(layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj], s)
            s = scales(f"layers.{i}.down_proj", f"{key}.mlp.down_proj", [mlp.down_proj.weight], "down_proj")
            _divide_rows(mlp.up_proj, s)
            mlp.down_proj.weight.mul_(s)
        s = scales("lm_head", "lm_head", [model.lm_head.weight], "lm_head")
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())  # untie from the embeddings
        _fold_into_norm(model.model.norm, [model.lm_head], s)
    return model, chosen


def _fold_into_norm(norm: Any, linears: list[Any], s: Any) -> None:
    """The norm's output divided by s, every linear reading it multiplied by s along its input."""
    norm.weight.div_(s)
    for linear in linears:
        linear.weight.mul_(s)


def _divide_rows(linear: Any, s: Any) -> None:
    """The linear's outputs divided by s (its weight's rows and its bias)."""
    linear.weight.div_(s[:, None])
    if linear.bias is not None:
        linear.bias.div_(s)
