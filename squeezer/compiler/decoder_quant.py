"""Weight-only blockwise quantization for `com.microsoft.MatMulNBits`, packed in numpy.

The decoder graph is written directly with `onnx.helper`, so its weights are quantized here, at the moment
each linear layer is emitted, rather than by rewriting a float graph afterwards: no float copy of the whole
model is serialized first, and the packing below is a few vectorized numpy lines per matrix.

Layout (the contrib op's spec): a linear layer's torch weight W [N, K] (out, in) is already MatMulNBits'
B orientation. K is cut into blocks of `block_size`; each (row, block) gets a float scale and an unsigned
zero point (asymmetric: the block's [min(w, 0), max(w, 0)] maps onto [0, 2^bits - 1]), and the weight is
recovered as (q - zero_point) * scale. 4-bit values are packed two per byte, the even element in the low
nibble, and so are 4-bit zero points (per row, ceil(blocks / 2) bytes).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def quantize_blockwise(weight: np.ndarray, bits: int, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B uint8 [N, blocks, block_size * bits / 8], scales float32 [N, blocks], zero_points uint8 packed).

    K is zero-padded to whole blocks (zeros quantize exactly, and the op ignores columns past K anyway).
    """
    if bits not in (4, 8):
        raise ValueError(f"MatMulNBits weights are 4 or 8 bits, not {bits}")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"the block size must be a power of two of at least 16, not {block_size}")
    n, k = weight.shape
    blocks = -(-k // block_size)
    w = np.zeros((n, blocks * block_size), dtype=np.float32)
    w[:, :k] = weight
    w = w.reshape(n, blocks, block_size)
    qmax = (1 << bits) - 1
    low = np.minimum(w.min(axis=2), 0.0)
    high = np.maximum(w.max(axis=2), 0.0)
    scales = (high - low) / qmax
    scales[scales == 0] = 1.0
    zero = np.clip(np.round(-low / scales), 0, qmax)
    q = np.clip(np.round(w / scales[:, :, None]) + zero[:, :, None], 0, qmax).astype(np.uint8)
    zero = zero.astype(np.uint8)
    if bits == 4:
        q = q[:, :, 0::2] | (q[:, :, 1::2] << 4)
        if blocks % 2:
            zero = np.concatenate([zero, np.zeros((n, 1), dtype=np.uint8)], axis=1)
        zero = zero[:, 0::2] | (zero[:, 1::2] << 4)
    return np.ascontiguousarray(q), scales.astype(np.float32), np.ascontiguousarray(zero)


def dequantize_blockwise(packed: np.ndarray, scales: np.ndarray, zero: np.ndarray, bits: int, k: int) -> np.ndarray:
    """The float weight [N, K] a packed one stands for (what MatMulNBits multiplies by): for tests and checks."""
    n, blocks = scales.shape
    if bits == 4:
        q = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n, blocks, -1)
        zero = np.stack([zero & 0x0F, zero >> 4], axis=-1).reshape(n, -1)[:, :blocks]
    else:
        q = packed
    w = (q.astype(np.float32) - zero[:, :, None].astype(np.float32)) * scales[:, :, None]
    return w.reshape(n, -1)[:, :k]


def matmul_nbits(graph: Any, x: str, weight: np.ndarray, name: str, bits: int, block_size: int, accuracy: int) -> str:
    """Emit `x @ weight.T` as one MatMulNBits node with its initializers; returns the output name.

    `graph` is the builder's (initializers, nodes) sink: anything with `add_initializer(name, array)` and
    `add_node(op, inputs, outputs, domain, **attrs)`.
    """
    n, k = weight.shape
    packed, scales, zero = quantize_blockwise(weight, bits, block_size)
    graph.add_initializer(f"{name}.qweight", packed)
    graph.add_initializer(f"{name}.scales", scales)
    graph.add_initializer(f"{name}.zero_points", zero)
    out = f"{name}/out"
    graph.add_node(
        "MatMulNBits",
        [x, f"{name}.qweight", f"{name}.scales", f"{name}.zero_points"],
        [out],
        "com.microsoft",
        K=k, N=n, bits=bits, block_size=block_size, accuracy_level=accuracy,
    )
    return out
