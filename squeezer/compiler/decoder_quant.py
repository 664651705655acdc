"""Weight-only blockwise quantization for `com.microsoft.MatMulNBits`, packed in numpy.

The decoder graph is written directly with `onnx.helper`, so its weights are quantized here, at the moment
each linear layer is emitted, rather than by rewriting a float graph afterwards: no float copy of the whole
model is serialized first, and the packing below is a few vectorized numpy lines per matrix.

Layout (the contrib op's spec): a linear layer's torch weight W [N, K] (out, in) is already MatMulNBits'
B orientation. K is cut into blocks of `block_size`; each (row, block) gets a float scale and an unsigned
zero point, and the op recovers the weight as (q - zero_point) * scale. 4-bit values are packed two per byte,
the even element in the low nibble, and so are 4-bit zero points (per row, ceil(blocks / 2) bytes).

Grids (`scheme`), chosen so that a model that was already quantized comes back exactly; by default ("best")
each matrix gets whichever of "minmax" and "symmetric" reconstructs it with the smaller error, so a GGUF
file's Q4_1 blocks and its Q8_0 embeddings each land on their own grid without the recipe naming them:
- "minmax" (4 bits): each block's [min, max] maps onto the 16 levels, as GGUF's Q4_1 (and AWQ/RTN min-max)
  store it: w = min + scale * q. MatMulNBits' zero point is an integer, so min is met as closely as an
  integer zero point allows and the rest, one float per block (`offsets`), is added back by a tiny second
  product: (x summed over each block) @ offsets. A GGUF Q4_1 model is then reproduced exactly (measured: its
  dequantized weights sit on this grid to the last bit), where an integer-only zero point re-rounds every
  weight a second time (SmolLM2's next-token top-1 agreement fell to 0.65 that way).
  With 8 bits the same grid holds Q4_1 blocks exactly too (255 levels are 17 steps per 4-bit level).
- "symmetric": scale = max|w| / (2^(bits-1) - 1), zero point 2^(bits-1), as GGUF's Q8_0 stores it
  (SmolLM2's tied embeddings / lm head): exact for such weights and the usual int8 choice for float ones.
- "asymmetric": [min(w, 0), max(w, 0)] onto the levels with an integer zero point and no offsets (zero is
  exact); kept for comparison, it is what the earlier recipes built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SCHEMES = ("best", "minmax", "symmetric", "asymmetric")


@dataclass(frozen=True)
class Quantized:
    """One matrix for MatMulNBits: packed B, scales, packed zero points, and per-block offsets (or None)."""

    packed: np.ndarray  # uint8 [N, blocks, block_size * bits / 8]
    scales: np.ndarray  # float32 [N, blocks]
    zero: np.ndarray  # uint8 [N, blocks] (8 bits) or [N, ceil(blocks / 2)] (4 bits, packed)
    offsets: np.ndarray | None  # float32 [N, blocks]: added as w = (q - zero) * scale + offset


def quantize_blockwise(weight: np.ndarray, bits: int, block_size: int, scheme: str | None = None) -> Quantized:
    """Quantize W [N, K] block by block along K on the scheme's grid (see the module doc).

    K is zero-padded to whole blocks (the op ignores columns past K); "minmax" needs whole blocks, since its
    offsets multiply block sums of x, and falls back to "asymmetric" otherwise.
    """
    scheme = scheme or "best"
    if bits not in (4, 8):
        raise ValueError(f"MatMulNBits weights are 4 or 8 bits, not {bits}")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"the block size must be a power of two of at least 16, not {block_size}")
    if scheme not in SCHEMES:
        raise ValueError(f"the quantization scheme is one of {', '.join(SCHEMES)}, not {scheme!r}")
    n, k = weight.shape
    if scheme == "best":
        return min((quantize_blockwise(weight, bits, block_size, grid) for grid in ("minmax", "symmetric")),
                   key=lambda q: float(np.abs(dequantize_blockwise(q, bits, k) - weight).max()))
    if scheme == "minmax" and k % block_size:
        scheme = "asymmetric"
    blocks = -(-k // block_size)
    w = np.zeros((n, blocks * block_size), dtype=np.float32)
    w[:, :k] = weight
    w = w.reshape(n, blocks, block_size)
    q, scales, zero, offsets = _GRIDS[scheme](w, (1 << bits) - 1)
    zero = zero.astype(np.uint8)
    if bits == 4:
        q = q[:, :, 0::2] | (q[:, :, 1::2] << 4)
        if blocks % 2:
            zero = np.concatenate([zero, np.zeros((n, 1), dtype=np.uint8)], axis=1)
        zero = zero[:, 0::2] | (zero[:, 1::2] << 4)
    return Quantized(np.ascontiguousarray(q), scales.astype(np.float32), np.ascontiguousarray(zero), offsets)


Grid = tuple[np.ndarray, np.ndarray, np.ndarray, "np.ndarray | None"]


def _safe(scales: np.ndarray) -> np.ndarray:
    scales[scales == 0] = 1.0  # a constant block: any scale represents it
    return scales


def _minmax(w: np.ndarray, qmax: int) -> Grid:
    low, high = w.min(axis=2), w.max(axis=2)
    scales = _safe((high - low) / qmax)
    q = np.clip(np.round((w - low[:, :, None]) / scales[:, :, None]), 0, qmax).astype(np.uint8)
    zero = np.clip(np.round(-low / scales), 0, qmax)
    offsets = (low + zero * scales).astype(np.float32)  # (q - zero) * scale + offset == low + q * scale
    return q, scales, zero, offsets


def _symmetric(w: np.ndarray, qmax: int) -> Grid:
    half = (qmax + 1) // 2
    scales = _safe(np.abs(w).max(axis=2) / (half - 1))
    q = (np.clip(np.round(w / scales[:, :, None]), 1 - half, half - 1) + half).astype(np.uint8)
    return q, scales, np.full(scales.shape, half), None


def _asymmetric(w: np.ndarray, qmax: int) -> Grid:
    low = np.minimum(w.min(axis=2), 0.0)
    high = np.maximum(w.max(axis=2), 0.0)
    scales = _safe((high - low) / qmax)
    zero = np.clip(np.round(-low / scales), 0, qmax)
    q = np.clip(np.round(w / scales[:, :, None]) + zero[:, :, None], 0, qmax).astype(np.uint8)
    return q, scales, zero, None


_GRIDS = {"minmax": _minmax, "symmetric": _symmetric, "asymmetric": _asymmetric}


def dequantize_blockwise(quantized: Quantized, bits: int, k: int) -> np.ndarray:
    """The float weight [N, K] a packed one stands for (what the emitted nodes multiply by): for tests and checks."""
    n, blocks = quantized.scales.shape
    packed, zero = quantized.packed, quantized.zero
    if bits == 4:
        q = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n, blocks, -1)
        zero = np.stack([zero & 0x0F, zero >> 4], axis=-1).reshape(n, -1)[:, :blocks]
    else:
        q = packed
    w = (q.astype(np.float32) - zero[:, :, None].astype(np.float32)) * quantized.scales[:, :, None]
    if quantized.offsets is not None:
        w = w + quantized.offsets[:, :, None]
    return w.reshape(n, -1)[:, :k]


def matmul_nbits(graph: Any, x: str, weight: np.ndarray, name: str, bits: int, block_size: int, accuracy: int,
                 scheme: str | None = None) -> str:
    """Emit `x @ weight.T` as a MatMulNBits node (plus the offsets' block-sum product); returns the output name.

    `graph` is the builder's (initializers, nodes) sink: anything with `add_initializer(name, array)`,
    `add_shared(name, array)` (one initializer for every user of the name) and `add_node(op, inputs,
    outputs, domain, **attrs)`. The offsets term costs K x blocks + blocks x N multiply-adds, about
    1/block_size of the main product. Its block-summing matrix depends only on K and the block size, so
    every layer shares one (a copy per projection made SmolLM2's artifact and its memory 12 MB larger).
    """
    n, k = weight.shape
    quantized = quantize_blockwise(weight, bits, block_size, scheme)
    graph.add_initializer(f"{name}.qweight", quantized.packed)
    graph.add_initializer(f"{name}.scales", quantized.scales)
    graph.add_initializer(f"{name}.zero_points", quantized.zero)
    [out] = graph.add_node(
        "MatMulNBits",
        [x, f"{name}.qweight", f"{name}.scales", f"{name}.zero_points"],
        [f"{name}/out"],
        "com.microsoft",
        K=k, N=n, bits=bits, block_size=block_size, accuracy_level=accuracy,
    )
    if quantized.offsets is None:
        return out
    blocks = k // block_size
    summing = np.repeat(np.eye(blocks, dtype=np.float32), block_size, axis=0)  # [K, blocks]: x -> block sums
    block_sum = graph.add_shared(f"block_sum.{k}x{block_size}", summing)
    graph.add_initializer(f"{name}.offsets", np.ascontiguousarray(quantized.offsets.T))  # [blocks, N]
    [sums] = graph.add_node("MatMul", [x, block_sum], [f"{name}/block_sums"])
    [shift] = graph.add_node("MatMul", [sums, f"{name}.offsets"], [f"{name}/offset"])
    [out] = graph.add_node("Add", [out, shift], [f"{name}/out_offset"])
    return out
