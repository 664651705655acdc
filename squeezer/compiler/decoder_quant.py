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

Offsets as nodes or folded (`fold_offsets`): the exact offset product is two small float MatMuls and an Add
per matrix, which read 4 bytes per block and cost a node each: 28% of a SmolLM2 single-request step. Folded,
the offsets become extra columns of the same MatMulNBits, fed the block sums: x' = [x | sums | sums] and
W' = [W | offsets in two 4-bit digits] (one digit of 8 bits), each digit a block of its own, so one node does
it all. Two digits carry the offsets to within 1/450 of a weight step (SmolLM2: at most 0.0015 of its largest
scale), and the block sums are rounded to int8 like every activation MatMulNBits reads; the gate judges it.
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


def unpack_zero(zero: np.ndarray, bits: int, blocks: int) -> np.ndarray:
    """Zero points [N, blocks] as one uint8 each (4-bit ones are stored two per byte)."""
    if bits == 8:
        return zero
    return np.stack([zero & 0x0F, zero >> 4], axis=-1).reshape(len(zero), -1)[:, :blocks]


def pack_zero(zero: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return np.ascontiguousarray(zero)
    if zero.shape[1] % 2:
        zero = np.concatenate([zero, np.zeros((len(zero), 1), dtype=np.uint8)], axis=1)
    return np.ascontiguousarray(zero[:, 0::2] | (zero[:, 1::2] << 4))


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
    if bits == 4:
        q = q[:, :, 0::2] | (q[:, :, 1::2] << 4)
    return Quantized(np.ascontiguousarray(q), scales.astype(np.float32), pack_zero(zero.astype(np.uint8), bits), offsets)


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
    packed, zero = quantized.packed, unpack_zero(quantized.zero, bits, blocks)
    q = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n, blocks, -1) if bits == 4 else packed
    w = (q.astype(np.float32) - zero[:, :, None].astype(np.float32)) * quantized.scales[:, :, None]
    if quantized.offsets is not None:
        w = w + quantized.offsets[:, :, None]
    return w.reshape(n, -1)[:, :k]


OFFSET_DIGITS = {4: 2, 8: 1}  # digits that carry folded offsets, by weight bits


def block_summing(k: int, block_size: int) -> np.ndarray:
    """[K, blocks] of ones and zeros: x @ it is x summed over each block."""
    return np.repeat(np.eye(k // block_size, dtype=np.float32), block_size, axis=0)


def fold_offsets(quantized: Quantized, bits: int, block_size: int) -> tuple[Quantized, int]:
    """The matrix with its offsets appended as digit columns (see the module doc), and how many columns that adds.

    Each digit spans the block sums padded to whole blocks; digit i quantizes what the earlier ones left.
    """
    assert quantized.offsets is not None
    n, blocks = quantized.scales.shape
    width = -(-blocks // block_size) * block_size
    rest = np.zeros((n, width), dtype=np.float32)
    rest[:, :blocks] = quantized.offsets
    parts = [quantized]
    for _ in range(OFFSET_DIGITS[bits]):
        digit = quantize_blockwise(rest, bits, block_size, "asymmetric")
        rest = rest - dequantize_blockwise(digit, bits, width)
        parts.append(digit)
    zero = np.concatenate([unpack_zero(p.zero, bits, p.scales.shape[1]) for p in parts], axis=1)
    folded = Quantized(np.concatenate([p.packed for p in parts], axis=1), np.concatenate([p.scales for p in parts], axis=1),
                       pack_zero(zero, bits), None)
    return folded, width * OFFSET_DIGITS[bits]


def matmul_nbits(graph: Any, x: str, weight: np.ndarray, name: str, bits: int, block_size: int, accuracy: int,
                 scheme: str | None = None, fold: bool = False) -> str:
    """Emit `x @ weight.T` as a MatMulNBits node (plus the offsets' block-sum product); returns the output name.

    `graph` is the builder's (initializers, nodes) sink: anything with `add_initializer(name, array)`,
    `add_shared(name, array)` (one initializer for every user of the name) and `add_node(op, inputs,
    outputs, domain, **attrs)`. The offsets term costs K x blocks + blocks x N multiply-adds, about
    1/block_size of the main product. Its block-summing matrix depends only on K and the block size, so
    every layer shares one (a copy per projection made SmolLM2's artifact and its memory 12 MB larger).
    `fold` puts the offsets inside the MatMulNBits instead (see the module doc).
    """
    n, k = weight.shape
    quantized = quantize_blockwise(weight, bits, block_size, scheme)
    blocks = k // block_size
    if quantized.offsets is not None and fold:
        quantized, extra = fold_offsets(quantized, bits, block_size)
        digits = np.zeros((k, extra), dtype=np.float32)
        for start in range(0, extra, extra // OFFSET_DIGITS[bits]):
            digits[:, start:start + blocks] = block_summing(k, block_size)
        block_sums = graph.add_shared(f"block_sum_digits.{k}x{block_size}x{bits}", digits)
        [sums] = graph.add_node("MatMul", [x, block_sums], [f"{name}/block_sums"])
        [x] = graph.add_node("Concat", [x, sums], [f"{name}/with_sums"], axis=-1)
        k += extra
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
    block_sum = graph.add_shared(f"block_sum.{k}x{block_size}", block_summing(k, block_size))
    graph.add_initializer(f"{name}.offsets", np.ascontiguousarray(quantized.offsets.T))  # [blocks, N]
    [sums] = graph.add_node("MatMul", [x, block_sum], [f"{name}/block_sums"])
    [shift] = graph.add_node("MatMul", [sums, f"{name}.offsets"], [f"{name}/offset"])
    [out] = graph.add_node("Add", [out, shift], [f"{name}/out_offset"])
    return out
