"""int8 quantization with onnxruntime.quantization: dynamic (weights int8, activations per run) and static
QDQ (activation ranges calibrated on sample inputs). Which nodes a recipe keeps in float is measured in
`sensitivity`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from squeezer.compiler.recipes import DynamicInt8, StaticInt8

QUANTIZABLE_OPS = ("MatMul", "Attention")
EMBEDDING_OPS = ("Gather", "EmbedLayerNormalization")
Feeds = list[dict[str, np.ndarray]]


def import_quantization() -> Any:
    try:
        from onnxruntime import quantization
    except ImportError:
        raise RuntimeError("quantization needs onnxruntime: pip install 'squeezer[onnx]'") from None
    return quantization


def quantizable_nodes(graph: Path) -> list[str]:
    """MatMuls with a constant weight, and fused Attention nodes: where int8 saves time."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    weights = {init.name for init in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "Attention" or (n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in weights)]


def embedding_nodes(graph: Path) -> list[str]:
    """Embedding lookups (Gather on a weight table, or the fused EmbedLayerNormalization)."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    weights = {init.name for init in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "EmbedLayerNormalization" or (n.op_type == "Gather" and n.input and n.input[0] in weights)]


@contextmanager
def quiet() -> Iterator[None]:
    """Below errors, silence the root logger's children: onnxruntime.quantization warns there for every fused node it
    cannot type, and its transformer fusions (whose modules log under bare names, `fusion_base`, `onnx_model`) report
    every pattern they fused, at INFO, into a server's log when a background compile runs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _extra_options() -> dict[str, Any]:
    import onnx

    # Fused contrib ops (Attention, SkipLayerNorm) defeat shape inference; their outputs are float.
    return {"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True}


def _weight_type(step: DynamicInt8) -> Any:
    q = import_quantization()
    return q.QuantType.QInt8 if step.weights == "s8" else q.QuantType.QUInt8


def dynamic(src: Path, dst: Path, step: DynamicInt8, exclude: list[str], only: list[str] | None = None) -> None:
    """Dynamic int8 per the step; `exclude` nodes stay float, and when `only` is given, every node not in it."""
    q = import_quantization()
    ops = list(QUANTIZABLE_OPS) + ([] if step.keep_embeddings else list(EMBEDDING_OPS))
    with quiet():
        q.quantize_dynamic(
            str(src), str(dst), weight_type=_weight_type(step), per_channel=step.per_channel,
            reduce_range=step.reduce_range, op_types_to_quantize=ops, nodes_to_exclude=exclude, nodes_to_quantize=only,
            extra_options=_extra_options(),
        )


def feed_reader(feeds: Feeds) -> Any:
    """A CalibrationDataReader over already tokenized inputs (defined here: onnxruntime is imported lazily)."""
    q = import_quantization()

    class FeedReader(q.CalibrationDataReader):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    return FeedReader()


def static(src: Path, dst: Path, step: StaticInt8, calibration: Feeds, exclude: list[str]) -> None:
    """Static QDQ int8 (u8 activations, s8 weights) with ranges calibrated on `calibration`."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    q = import_quantization()
    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy}
    # Activations are quantized only where their type is known; the fused contrib ops (Attention,
    # SkipLayerNorm) defeat ONNX's shape inference, ORT's symbolic one knows them.
    typed = dst.with_suffix(".typed.onnx")
    onnx.save(SymbolicShapeInference.infer_shapes(onnx.load(str(src)), auto_merge=True), str(typed))
    with quiet():
        q.quantize_static(
            str(typed), str(dst), feed_reader(calibration), quant_format=q.QuantFormat.QDQ,
            activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8, per_channel=step.per_channel,
            op_types_to_quantize=["MatMul"], nodes_to_exclude=exclude, calibrate_method=methods[step.calibration],
            calibration_providers=["CPUExecutionProvider"], extra_options=_extra_options(),
        )
    typed.unlink()


def run_feeds(session: Any, feeds: Feeds, extra: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
    """Each feed's outputs, flattened into one vector; inputs the graph lacks are dropped, `extra` is fed with each."""
    names = {i.name for i in session.get_inputs()}
    return [np.concatenate([o.ravel() for o in session.run(None, {**{k: v for k, v in f.items() if k in names}, **(extra or {})})])
            for f in feeds]


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / max(float(np.linalg.norm(expected)), 1e-12))
