"""Graph optimization with ONNX Runtime's transformer fusions, and fp16 conversion for GPUs.

The fusions replace dozens of small ops per layer with a few fused kernels (Attention, SkipLayerNorm,
BiasGelu, EmbedLayerNorm); they run offline here (`opt_level=0`: the pattern fusions only), and ONNX
Runtime's own graph optimizations still run when a session loads the result.
"""

from __future__ import annotations

from pathlib import Path

from squeezer.compiler.export import Exported
from squeezer.compiler.quantize import quiet
from squeezer.compiler.recipes import Float16, Fuse


def import_optimizer() -> tuple[object, object]:
    try:
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError as exc:
        raise RuntimeError(f"graph fusion needs onnxruntime's transformers tools ({exc}): pip install 'squeezer[onnx]'") from None
    return optimize_model, FusionOptions


def fuse(src: Path, dst: Path, step: Fuse, exported: Exported) -> dict[str, int]:
    """Apply the BERT-family fusions; returns how many of each fused op the graph now has."""
    optimize_model, fusion_options = import_optimizer()
    options = fusion_options("bert")  # type: ignore[operator]
    with quiet():
        model = optimize_model(  # type: ignore[operator]
            str(src), model_type="bert", num_heads=exported.num_heads, hidden_size=exported.hidden_size,
            optimization_options=options, opt_level=0, use_gpu=step.for_gpu,
        )
        model.save_model_to_file(str(dst))
        return {name: count for name, count in model.get_fused_operator_statistics().items() if count}


def approximate_gelu(src: Path, dst: Path) -> int:
    """Swap a fused graph's Gelu and BiasGelu nodes for FastGelu (ONNX Runtime's own pass); how many it swapped."""
    import onnx
    from onnxruntime.transformers.fusion_gelu_approximation import FusionGeluApproximation
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    with quiet():
        FusionGeluApproximation(model).apply()
        model.save_model_to_file(str(dst))
    return sum(node.op_type == "FastGelu" for node in model.nodes())


def to_float16(src: Path, dst: Path, step: Float16) -> None:
    """fp16 weights and compute; inputs stay int64 and outputs float32 when `keep_io_types`."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    with quiet():
        model.convert_float_to_float16(keep_io_types=step.keep_io_types)
        model.save_model_to_file(str(dst))
