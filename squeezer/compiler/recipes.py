"""Recipes: how each candidate is built, as data.

A recipe is a name and a tuple of steps applied to the exported fp32 graph; each step is a small frozen
dataclass whose fields are the choices (weight type, per-channel, ...). Building walks the steps through a
table of builders (`squeezer.compiler.build.BUILDERS`), so a new variant is a new line in `RECIPES`, not a
new code path, and the report can print exactly what each candidate was.

Causal LMs have their own table, `DECODER_RECIPES`: one step each, a `DecoderWeights` (how the blocks' linear
layers are stored), applied to the float32 model by `squeezer.compiler.decoder_graph.build_decoder`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from squeezer.compiler.decoder_graph import DecoderWeights
from squeezer.hardware import BF16_UNITS, FP16_UNITS, INT8_DOT_UNITS, NO_UNITS


@dataclass(frozen=True)
class Fuse:
    """ONNX Runtime's transformer fusions: attention, skip/bias layer norm, bias GELU, embedding layer norm.
    `for_gpu` picks the GPU fusion patterns."""

    for_gpu: bool = False


@dataclass(frozen=True)
class ApproximateGelu:
    """A fused graph's exact GELU swapped for its tanh approximation (FastGelu): faster, slightly different
    numbers, hence a separate candidate that the gate must accept. A step after `Fuse`, not an option of it, so
    the fused graph is built once for both candidates: fusing runs in Python at some 5 times the weights' memory."""


@dataclass(frozen=True)
class DynamicInt8:
    """Dynamic int8 quantization: int8 weights stored, activations quantized per run from their range.

    `weights` is "s8" (u8 activations x s8 weights, what VNNI and ARM dot products run fastest) or "u8"
    (u8 x u8, which older x86 without VNNI runs without the saturation of its 16-bit accumulation).
    `reduce_range` uses 7-bit weights, the usual cure for that saturation on AVX2-only CPUs. Embeddings
    stay float when `keep_embeddings`; `keep_sensitive` keeps that fraction of the quantizable nodes in
    float, the ones whose quantization alone hurts the outputs most (measured, not guessed).
    """

    weights: str = "s8"
    per_channel: bool = False
    reduce_range: bool = False
    keep_embeddings: bool = True
    keep_sensitive: float = 0.0

    @property
    def needs(self) -> tuple[tuple[str, ...], str]:
        """Full-range s8 weights run as measured only on int8 dot-product units (see `hardware.INT8_DOT_UNITS`)."""
        return INT8_DOT_UNITS if self.weights == "s8" and not self.reduce_range else NO_UNITS


@dataclass(frozen=True)
class StaticInt8:
    """Static int8 in QDQ form: activation ranges calibrated once on sample inputs (not the validation set)."""

    per_channel: bool = True
    calibration: str = "minmax"  # onnxruntime CalibrationMethod: minmax or entropy

    @property
    def needs(self) -> tuple[tuple[str, ...], str]:
        return INT8_DOT_UNITS  # full-range s8 weights, as DynamicInt8's


@dataclass(frozen=True)
class Float16:
    """fp16 weights and activations for GPUs; inputs and outputs keep their types so callers see no change."""

    keep_io_types: bool = True


# A reduced compute precision -> the CPU units it needs to run as measured (float32 needs none).
PRECISION_UNITS = {"bf16": BF16_UNITS, "f16": FP16_UNITS}


@dataclass(frozen=True)
class OpenVino:
    """The exported graph converted to OpenVINO's IR, run by its CPU plugin at `precision` ("f32", "bf16", "f16").

    bf16 and f16 are the plugin's inference precision (its own fusions, bf16 matrix units on AMX or AVX-512 BF16,
    fp16 ones on AVX-512 FP16 or AMX FP16), not a rewrite of the graph: the artifact records the precision and the
    OpenVINO backend compiles with it. f16 keeps 3 more mantissa bits than bf16 but overflows past 65504, which
    the gate would see in the outputs.
    """

    precision: str = "f32"

    @property
    def needs(self) -> tuple[tuple[str, ...], str]:
        return PRECISION_UNITS.get(self.precision, NO_UNITS)


@dataclass(frozen=True)
class TorchAutocast:
    """The PyTorch model itself, its float32 weights run under `torch.autocast` at `precision` ("bf16").

    Not a graph: the candidate is the reference model with its matrix products in bf16 (oneDNN's AMX or AVX-512
    BF16 kernels), layer norms and softmax kept float32 by autocast. It needs no exporter and no other runtime,
    so it serves models that no graph candidate can, and it is what a PyTorch user gets without leaving
    PyTorch. Measured on AMD EPYC (AVX-512 BF16, 2 threads), MiniLM: 1.7x fp32 on short sentences, 1.9x on
    long passages, min cosine 0.99998 (OpenVINO bf16 reached 3.1x there).
    """

    precision: str = "bf16"

    @property
    def needs(self) -> tuple[tuple[str, ...], str]:
        return PRECISION_UNITS.get(self.precision, NO_UNITS)


# The feed-forward down-projections' MatMuls, as the ONNX exporter names them in the usual encoder families
# (BERT/RoBERTa/XLM-R/ELECTRA/MPNet: output/dense; DistilBERT: ffn/lin2; others: mlp fc2 or down_proj).
FFN_DOWN_PROJECTIONS = (r".*/output/dense/MatMul.*", r".*/ffn/lin2/MatMul.*", r".*/mlp/fc2/MatMul.*",
                        r".*/mlp/down_proj/MatMul.*")
FFN_MATMULS = (*FFN_DOWN_PROJECTIONS, r".*/intermediate/dense/MatMul.*", r".*/ffn/lin1/MatMul.*", r".*/mlp/fc1/MatMul.*",
               r".*/mlp/(up|gate)_proj/MatMul.*")


@dataclass(frozen=True)
class NncfInt8:
    """NNCF's post-training int8 quantization of an OpenVINO IR, calibrated on the calibration texts (never the
    validation set the gate judges with).

    Its transformer model type keeps softmax, layer norms and the embeddings' gathers in float. `keep` names
    (regular expressions over the graph's node names) more nodes to keep float, the way the ONNX Runtime int8
    recipes keep their sensitive MatMuls: by default the feed-forward MatMuls, so int8 runs in attention only.
    Measured on MiniLM's gate (min / mean cosine): that 0.9926 / 0.9981, passed; keeping only the
    down-projections 0.980 / 0.995 and quantizing everything with SmoothQuant 0.75 / 0.97, both rejected.
    `smooth_quant` is NNCF's outlier smoothing, off by default (it made MiniLM worse). `preset` "mixed"
    quantizes activations asymmetrically, "performance" symmetrically (fewer ops). The plugin runs the int8
    parts on VNNI or AMX int8 units and the float rest at the OpenVino step's precision.
    """

    preset: str = "mixed"
    keep: tuple[str, ...] = FFN_MATMULS
    smooth_quant: bool = False


Step = Fuse | ApproximateGelu | DynamicInt8 | StaticInt8 | Float16 | DecoderWeights | OpenVino | NncfInt8 | TorchAutocast
# The step kinds that hand a candidate to another runtime than ONNX Runtime (the default).
RUNTIMES: dict[type, str] = {OpenVino: "openvino", TorchAutocast: "torch"}
PRECISION_DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}  # a runtime's precision -> the dtype named
WEIGHT_DTYPES = {32: "float32", 8: "int8", 4: "int4"}  # DecoderWeights.bits -> the dtype a report names


def needs(step: Any) -> tuple[tuple[str, ...], str]:
    """The CPU units a step's graph needs to run as measured (any one of them) and why; none for most steps."""
    return getattr(step, "needs", NO_UNITS)


@dataclass(frozen=True)
class Recipe:
    """A candidate: steps applied, in order, to the exported fp32 graph."""

    name: str
    steps: tuple[Step, ...]
    targets: tuple[str, ...] = ("cpu",)
    sweep: str = "default"  # "default": tried on every run; "full": only with --sweep full
    note: str = ""
    # Tried only on CPUs with none of these: a variant for CPUs that cannot run its full-range twin as measured.
    only_without: tuple[str, ...] = ()

    @property
    def runtime(self) -> str:
        """What runs the candidate: OpenVINO for an IR, PyTorch for autocast, else ONNX Runtime."""
        return next((RUNTIMES[type(step)] for step in self.steps if type(step) in RUNTIMES), "onnxruntime")

    @property
    def precision(self) -> str | None:
        """The compute precision its runtime is asked for (OpenVINO's hint, autocast's dtype), None for a graph
        whose types say it all; the artifact carries it, because the runtime applies it when loading."""
        return next((step.precision for step in self.steps if isinstance(step, (OpenVino, TorchAutocast))), None)

    @property
    def requires(self) -> tuple[str, ...]:
        """CPU features this recipe's graph needs to run as measured (any one of them), for the artifact."""
        return tuple(flag for step in self.steps for flag in needs(step)[0])

    def missing_features(self, flags: list[str]) -> str | None:
        """Why this CPU (its `flags`) does not try the recipe, or None when it does."""
        for step in self.steps:
            needed, reason = needs(step)
            if needed and not set(needed) & set(flags):
                return f"{reason}; this CPU reports none of {', '.join(needed)}"
        found = sorted(set(self.only_without) & set(flags))
        if found:
            return f"for CPUs without {', '.join(self.only_without)}; this one has {', '.join(found)}, where its twin runs"
        return None

    @property
    def dtype(self) -> str:
        weights = [step for step in self.steps if isinstance(step, DecoderWeights)]
        if weights:
            return WEIGHT_DTYPES[weights[-1].bits]
        kinds = {type(step) for step in self.steps}
        if kinds & {DynamicInt8, StaticInt8, NncfInt8}:
            return "int8"
        return "float16" if Float16 in kinds else PRECISION_DTYPES[self.precision or "f32"]

    def describe(self) -> dict[str, Any]:
        """The recipe as JSON for the report: each step's kind and fields."""
        return {"steps": [{"kind": type(s).__name__, **dataclasses.asdict(s)} for s in self.steps], "note": self.note}


FUSED = Fuse()

RECIPES: tuple[Recipe, ...] = (
    Recipe("fp32", (), ("cpu", "cuda"), note="plain export, the baseline"),
    Recipe("fp32-fused", (FUSED,), note="transformer fusions"),
    Recipe("fp32-fused-fast-gelu", (FUSED, ApproximateGelu()), note="fusions + tanh GELU approximation"),
    Recipe("int8-dyn-s8", (FUSED, DynamicInt8("s8", keep_embeddings=False)), note="plain dynamic int8, everything quantized"),
    Recipe("int8-dyn-u8-pc", (FUSED, DynamicInt8("u8", per_channel=True)), note="u8 weights, per channel"),
    Recipe("int8-dyn-s8-pc-keep33", (FUSED, DynamicInt8("s8", per_channel=True, keep_sensitive=0.34)),
           note="s8 per channel, the most sensitive third kept float"),
    Recipe("int8-static-qdq-pc", (FUSED, StaticInt8(per_channel=True)), note="static QDQ, calibrated"),
    Recipe("int8-dyn-s8-pc-keep33-rr", (FUSED, DynamicInt8("s8", per_channel=True, reduce_range=True, keep_sensitive=0.34)),
           only_without=INT8_DOT_UNITS[0], note="7-bit weights per channel, the sensitive third float (no VNNI)"),
    Recipe("ov-fp32", (OpenVino("f32"),), note="OpenVINO IR, its CPU plugin in fp32"),
    Recipe("ov-bf16", (OpenVino("bf16"),), note="OpenVINO IR in bf16 (AMX or AVX-512 BF16 units)"),
    Recipe("ov-int8", (OpenVino("f32"), NncfInt8()), note="OpenVINO IR, NNCF int8 in attention, feed-forward fp32"),
    Recipe("torch-bf16", (TorchAutocast("bf16"),), note="PyTorch with bf16 autocast (AMX or AVX-512 BF16 units)"),
    # --sweep full: the remaining variants that matter on some CPUs.
    Recipe("int8-dyn-u8", (FUSED, DynamicInt8("u8")), sweep="full", note="u8/u8, for CPUs without VNNI"),
    Recipe("int8-dyn-s8-rr", (FUSED, DynamicInt8("s8", reduce_range=True)), sweep="full", note="u8/s8, 7-bit weights"),
    Recipe("int8-dyn-s8-pc", (FUSED, DynamicInt8("s8", per_channel=True)), sweep="full", note="s8 per channel"),
    Recipe("int8-dyn-s8-pc-rr", (FUSED, DynamicInt8("s8", per_channel=True, reduce_range=True)), sweep="full",
           note="s8 per channel, 7-bit weights"),
    Recipe("int8-dyn-u8-pc-keep33", (FUSED, DynamicInt8("u8", per_channel=True, keep_sensitive=0.34)), sweep="full",
           note="u8 per channel, the most sensitive third kept float"),
    Recipe("int8-dyn-s8-pc-keep15", (FUSED, DynamicInt8("s8", per_channel=True, keep_sensitive=0.15)), sweep="full",
           note="s8 per channel, the most sensitive 15% kept float"),
    Recipe("int8-dyn-s8-pc-keep50", (FUSED, DynamicInt8("s8", per_channel=True, keep_sensitive=0.5)), sweep="full",
           note="s8 per channel, the most sensitive half kept float"),
    Recipe("int8-dyn-s8-pc-keep33-fast-gelu",
           (FUSED, ApproximateGelu(), DynamicInt8("s8", per_channel=True, keep_sensitive=0.34)), sweep="full",
           note="tanh GELU + s8 per channel, sensitive third float"),
    Recipe("int8-static-qdq", (FUSED, StaticInt8(per_channel=False)), sweep="full", note="static QDQ, per tensor"),
    Recipe("ov-int8-bf16", (OpenVino("bf16"), NncfInt8()), sweep="full",
           note="OpenVINO IR, NNCF int8 in attention, the rest bf16"),
    # Measured on an Intel Xeon (family 6 model 207) whose hypervisor hides AMX, MiniLM, throughput profile: passed
    # at min cosine 1.0000 but 0.77x PyTorch fp32, as slow as bf16 there (0.74x; OpenVINO fp32 1.24x): without AMX
    # neither half precision beats fp32 on that CPU. For CPUs with AMX FP16, where fp16 may win.
    Recipe("ov-f16", (OpenVino("f16"),), sweep="full", note="OpenVINO IR in fp16 (AVX-512 FP16 or AMX FP16 units)"),
    Recipe("ov-int8-perf", (OpenVino("f32"), NncfInt8("performance")), sweep="full",
           note="OpenVINO IR, NNCF int8 with symmetric activations"),
    Recipe("ov-int8-keep-down", (OpenVino("f32"), NncfInt8(keep=FFN_DOWN_PROJECTIONS)), sweep="full",
           note="OpenVINO IR, NNCF int8 but the feed-forward down-projections"),
    Recipe("ov-int8-sq", (OpenVino("f32"), NncfInt8(keep=(), smooth_quant=True)), sweep="full",
           note="OpenVINO IR, NNCF int8 everywhere it can, SmoothQuant"),
    Recipe("fp32-fused-gpu", (Fuse(for_gpu=True),), ("cuda",), note="GPU fusions"),
    Recipe("fp16-fused-gpu", (Fuse(for_gpu=True), Float16()), ("cuda",), note="GPU fusions in fp16"),
    Recipe("fp16-fused-gpu-fast-gelu", (Fuse(for_gpu=True), ApproximateGelu(), Float16()), ("cuda",), sweep="full",
           note="GPU fusions in fp16 with tanh GELU"),
)


# Causal LMs (text-generation): weight-only quantization of the linear layers, each matrix on the grid that
# reconstructs it best (a GGUF's Q4_1 / Q8_0 weights come back exactly, see decoder_quant). The lm head is
# the largest matrix of a small model and is read whole for every token, so quantizing it (8 bits by
# default) is where most of the speed is; the candidates with a float head show what it costs in accuracy.
# The lm head's input rows are scaled one by one too: measured on an Intel Xeon (AVX-512 VNNI, SmolLM2, throughput
# profile), with the down projection's alone the gate's greedy prefix was 0.54 (rejected, < 0.60; top-1 0.944,
# greedy exact 0.25), with the head's as well 0.77 (top-1 0.960, exact 0.50) at the same step time (15.3 against
# 16.2 ms); scaling every projection's rows 0.76 (top-1 0.972) but 17.3 ms; a float head 0.76 and 21.2 ms.
W8A8 = DecoderWeights(bits=8, quantize_lm_head=True, int8_activations=True,
                      smoothing=(0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8), row_scaled=("down_proj", "lm_head"))
DECODER_RECIPES: tuple[Recipe, ...] = (
    Recipe("decoder-fp32", (DecoderWeights(bits=32),), note="fused ONNX decoder, float32 weights"),
    Recipe("decoder-int8-head8", (DecoderWeights(bits=8, quantize_lm_head=True),), note="int8 weight-only, int8 lm head"),
    Recipe("decoder-int4-head8", (DecoderWeights(bits=4, quantize_lm_head=True),), note="int4 weight-only, int8 lm head"),
    # Q4_1 offsets folded into the MatMulNBits (two 4-bit digits, ~1/1000 of a step) rather than exact products
    # of their own: SmolLM2 6.9 -> 5.7 ms per single-request step, top-1 agreement 0.984 and KL 0.0032 as exact.
    Recipe("decoder-int4-head8-folded", (DecoderWeights(bits=4, quantize_lm_head=True, fold_offsets=True),),
           note="int4 weight-only, min/max offsets folded in, int8 lm head"),
    # int8 activations too (DynamicQuantizeMatMul, see decoder_int8): SmolLM2 at 8 sequences 16.0 -> 10.0 ms per
    # step against int4-folded, with a smaller gate margin (top-1 0.94, KL 0.019 against 0.98 and 0.003); the
    # throughput profile picks it, the latency profile keeps int4 (one sequence reads weights, 4 bits win).
    Recipe("decoder-w8a8-smooth", (W8A8,), note="int8 weights and dynamic int8 activations, SmoothQuant, int8 lm head"),
    # Without VNNI, full-range s8 weights saturate ONNX Runtime's 16-bit pair sums (a 20% error on a random
    # matrix, tests/compiler/test_decoder_int8.py); 7-bit weights cannot, at half the weight levels.
    Recipe("decoder-w7a8-smooth", (dataclasses.replace(W8A8, int8_weight_bits=7),), only_without=INT8_DOT_UNITS[0],
           note="7-bit weights and dynamic int8 activations, for CPUs without VNNI"),
    Recipe("decoder-int8", (DecoderWeights(bits=8),), sweep="full", note="int8 weight-only, float lm head"),
    Recipe("decoder-int4", (DecoderWeights(bits=4),), sweep="full", note="int4 weight-only, float lm head"),
    Recipe("decoder-int4-head4", (DecoderWeights(bits=4, quantize_lm_head=True, head_bits=4),), sweep="full",
           note="int4 weight-only, int4 lm head"),
    # Integer zero points only: no offset products (SmolLM2: 7.6 -> 5.5 ms per step), but weights that were
    # already quantized are rounded a second time (SmolLM2's top-1 agreement 0.98 -> 0.68). For float sources.
    Recipe("decoder-int4-head8-intzp", (DecoderWeights(bits=4, quantize_lm_head=True, scheme="asymmetric"),),
           sweep="full", note="int4 weight-only, integer zero points (no offsets), int8 lm head"),
)


def tables() -> dict[str, tuple[Recipe, ...]]:
    """Each model family's recipe table, read at call time so that a recipe added to a table is picked up."""
    return {"encoder": RECIPES, "decoder": DECODER_RECIPES}


def all_recipes() -> tuple[Recipe, ...]:
    """Every recipe of every family (names are unique across the tables)."""
    return tuple(r for table in tables().values() for r in table)


def recipes_for(target: str, sweep: str, names: list[str] | None = None, family: str = "encoder") -> list[Recipe]:
    """The recipes a run tries: those named (in that order), else those for the target and sweep.

    `family` picks the table: "encoder" (graphs exported from encoders) or "decoder" (causal LMs). A named
    recipe of the other family is refused with the names that would fit.
    """
    table = tables()[family]
    if names:
        by_name = {r.name: r for r in table}
        foreign = [n for n in names if n not in by_name]
        if foreign:
            raise ValueError(f"--recipes: {', '.join(foreign)} cannot build a {family} model; its recipes are "
                             f"{', '.join(by_name)}")
        return [by_name[n] for n in names]
    return [r for r in table if target in r.targets and (sweep == "full" or r.sweep == "default")]
