"""int8 weights and int8 activations for the decoder's linear layers: `com.microsoft.DynamicQuantizeMatMul`.

Why a second kind of linear layer: MatMulNBits (weight-only, `decoder_quant`) reads 4-bit weights and is the
fastest for one sequence, where a step is bound by reading the weights. With 8 to 16 sequences stepping
together, a step is bound by arithmetic instead, and onnxruntime's u8 x s8 integer GEMM (VNNI, AVX2) runs it
2 to 3 times faster than MatMulNBits does (SmolLM2's 576 x 3072 projection at 16 rows: 171 vs 446 us). The
activations are quantized per run, per tensor (u8 with a zero point, by the op itself); the weights are s8,
symmetric, one scale per output channel.

What it costs in accuracy is the activations' outliers: a few channels of a normed hidden state are 10 to
100 times larger than the rest, and a per-tensor scale set by them leaves the others a few levels.
`squeezer.compiler.smoothing` moves them into the weights first (SmoothQuant). A few tokens (the first of a
prompt, some delimiters) carry far larger values still in the MLP's down projection input; for the
projections named `row_scaled`, each row is divided by its own largest magnitude before the op and the
output multiplied back, so one such token no longer sets the scale of every other row in the batch.

The speed assumes VNNI (AVX-512 VNNI or AVX-VNNI) or AMX. Without them, onnxruntime's AVX2 u8 x s8 kernel adds
pairs of products in 16 bits, which full-range weights saturate (measured on an AVX2-only AMD EPYC: errors of 20%
of the output's scale on a random matrix). So the full-range recipe needs those units (it is skipped without them,
and its artifact is refused there), and CPUs without them get 7-bit weights (`qmax` 63), whose sums fit.

Rows still share one activation scale otherwise, so a sequence's logits depend slightly on what else is in
its batch (as with any per-tensor dynamic quantization); the generation gate decodes its prompts batched, so
it judges that too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

QMAX = 127  # symmetric s8 weights use -127..127, so negation is exact


def quantize_per_channel(weight: np.ndarray, qmax: int = QMAX) -> tuple[np.ndarray, np.ndarray]:
    """W [N, K] as s8 [N, K] and one float scale per output row: W ~= q * scale[:, None]. `qmax` 63: 7-bit
    weights, whose u8 x s8 pair sums fit 16 bits (255 * 63 * 2 = 32130), for CPUs without VNNI."""
    scales = np.abs(weight).max(axis=1) / qmax
    scales[scales == 0] = 1.0
    q = np.clip(np.round(weight / scales[:, None]), -qmax, qmax).astype(np.int8)
    return q, scales.astype(np.float32)


def fake_quantize_activations(x: np.ndarray, row_scaled: bool) -> np.ndarray:
    """x [rows, K] as the graph sees it after quantizing: DynamicQuantizeLinear's per-tensor u8 grid (the range
    widened to hold 0), after scaling each row to a largest magnitude of 1 when `row_scaled`."""
    rows = np.maximum(np.abs(x).max(axis=1, keepdims=True), 1e-30) if row_scaled else np.ones((1, 1), np.float32)
    x = x / rows
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (high - low) / 255 or 1.0
    zero = np.clip(np.round(-low / scale), 0, 255)
    q = np.clip(np.round(x / scale) + zero, 0, 255)
    return (q - zero) * scale * rows


def matmul_int8(graph: Any, x: str, weight: np.ndarray, name: str, row_scaled: bool, qmax: int = QMAX) -> str:
    """Emit `x @ weight.T` as DynamicQuantizeMatMul (plus the row scaling when asked); returns the output name.

    `graph` is the builder's sink (`add_initializer`, `add_shared`, `add_node`, as in `decoder_quant`); `qmax` as
    in `quantize_per_channel`.
    """
    q, scales = quantize_per_channel(weight, qmax)
    graph.add_initializer(f"{name}.qweight", q.T)  # [K, N]: the op's B
    graph.add_initializer(f"{name}.scales", scales)
    if not row_scaled:
        return graph.add_node("DynamicQuantizeMatMul", [x, f"{name}.qweight", f"{name}.scales"], [f"{name}/out"],
                              "com.microsoft")[0]
    last = graph.add_shared("int8.last_axis", np.array([-1], dtype=np.int64))
    tiny = graph.add_shared("int8.tiny", np.array(1e-30, dtype=np.float32))  # an all-zero row (padding) stays 0
    [magnitude] = graph.add_node("Abs", [x], [f"{name}/abs"])
    [largest] = graph.add_node("ReduceMax", [magnitude, last], [f"{name}/row_max"], keepdims=1)
    [rows] = graph.add_node("Max", [largest, tiny], [f"{name}/row_scale"])
    [scaled] = graph.add_node("Div", [x, rows], [f"{name}/row_scaled"])
    [out] = graph.add_node("DynamicQuantizeMatMul", [scaled, f"{name}.qweight", f"{name}.scales"], [f"{name}/int8"],
                           "com.microsoft")
    return graph.add_node("Mul", [out, rows], [f"{name}/out"])[0]
