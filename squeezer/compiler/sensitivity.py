"""Which quantizable nodes move a model's outputs most when quantized alone: the ones a recipe keeps in float.

Measured, not guessed from names: the outputs on probe inputs with one node quantized, against the float
graph's. It used to quantize the graph once per node with onnxruntime's quantizer and load each result: for
BERT-base 48 quantizations of a 418 MiB graph, 233 s (most of its compile) and a 3.1 GiB peak. Now the quantizer
runs once, on every node, and one float graph with a switch replays each node's quantization in turn (39 s,
1.5 GiB; MiniLM 26 -> 6 s):

- the weights are the quantizer's own int8 values, zero points and scales, read from its output and dequantized
  (`(q - zero_point) * scale`, per output column or per tensor, as its MatMulInteger and QAttention apply them);
- the activations go through `DynamicQuantizeLinear` and `DequantizeLinear`, the u8 per-tensor quantization the
  quantizer's dynamic graphs compute, where a graph input (`SWITCH`) names the node; elsewhere they pass as they are;
- the weights are graph inputs, one per node, fed as the float originals for every node but the one switched on.

The products then sum in float instead of int32: a difference far below the errors being ranked. They are exact
products, as int8 dot-product units compute them; without such units full-range s8 weights saturate in ONNX Runtime's
kernels, but no sweep tries them there (`recipes.DynamicInt8.needs`). Against the
per-node quantizations, MiniLM's 24 errors agreed to 5 digits and a BERT-base's 48 within 0.2%, in the same order
(tests/compiler/test_sensitivity.py holds every scheme to 1%). The probe inputs are the calibration
texts, never the validation set, so the gate still judges on data the candidate was not tuned on.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from squeezer.compiler import quantize
from squeezer.compiler.recipes import DynamicInt8

SWITCH = "squeezer_quantized_node"  # int64 scalar: the index of the node whose quantization is replayed; -1: none
Weights = dict[str, np.ndarray]


def rank_sensitivity(src: Path, step: DynamicInt8, probe: quantize.Feeds, nodes: list[str],
                     progress: Callable[[str], None]) -> list[tuple[str, float]]:
    """`nodes` sorted by the relative output error of quantizing each one alone (as `step` would), worst first."""
    progress(f"sensitivity: quantizing {len(nodes)} nodes once")
    quantized = _quantized_weights(src, step, nodes)
    session, weights, switched = _switch_session(src, nodes)
    reference = _run(session, probe, weights, -1)
    errors = []
    for i, node in enumerate(nodes):
        progress(f"sensitivity {i + 1}/{len(nodes)}: {node}")
        feed, source = switched[node]
        if source not in quantized:  # the quantizer left it float: quantizing it alone changes nothing
            errors.append((node, 0.0))
            continue
        got = _run(session, probe, {**weights, feed: _dequantized(*quantized[source])}, i)
        errors.append((node, max(quantize.relative_error(a, b) for a, b in zip(got, reference))))
    return sorted(errors, key=lambda item: item[1], reverse=True)


def _quantized_weights(src: Path, step: DynamicInt8, nodes: list[str]) -> dict[str, tuple[np.ndarray, ...]]:
    """Weight name -> (int8 values, zero point, scale) from one quantization of every node in `nodes`."""
    import onnx
    from onnx import numpy_helper

    with tempfile.TemporaryDirectory(dir=Path(src).parent) as scratch:
        out = Path(scratch) / "all.onnx"
        quantize.dynamic(src, out, step, exclude=[], only=nodes)
        tables = {t.name: t for t in onnx.load(str(out)).graph.initializer}
    names = {name[: -len("_quantized")] for name in tables if name.endswith("_quantized")}
    return {name: tuple(numpy_helper.to_array(tables[name + suffix]) for suffix in ("_quantized", "_zero_point", "_scale"))
            for name in names}


def _dequantized(values: np.ndarray, zero_point: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Float weights as the int8 kernels see them: the zero point and scale are per output column (the last axis)
    or one for the tensor, and broadcast along the last axis either way."""
    return ((values.astype(np.float32) - zero_point.astype(np.float32)) * scale.astype(np.float32)).astype(np.float32)


def _switch_session(src: Path, nodes: list[str]) -> tuple[Any, Weights, dict[str, tuple[str, str]]]:
    """A session on the float graph with `SWITCH`, the float weights it is fed, and for each node the graph input
    its weight now comes from and the initializer that held it. Each node reads an input of its own, so a weight
    shared with a node the quantizer met first (a tied embedding's lookup) stays float there, as it does when the
    quantizer quantizes this node alone."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    position = {name: i for i, name in enumerate(nodes)}
    tables = {t.name: t for t in graph.initializer}
    weights: Weights = {}
    switched: dict[str, tuple[str, str]] = {}
    ordered = []
    for node in graph.node:
        if node.name in position:
            feed, source = f"squeezer_switch_{position[node.name]}_weight", node.input[1]
            weights[feed] = numpy_helper.to_array(tables[source])
            switched[node.name] = (feed, source)
            node.input[1] = feed
            ordered.extend(_switched_activation(node, position[node.name]))
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    used = {name for node in graph.node for name in node.input}
    for source in {source for _, source in switched.values()} - used:
        graph.initializer.remove(tables[source])
    graph.input.extend(helper.make_tensor_value_info(feed, onnx.TensorProto.FLOAT, list(w.shape)) for feed, w in weights.items())
    graph.input.append(helper.make_tensor_value_info(SWITCH, onnx.TensorProto.INT64, []))
    data = model.SerializeToString()
    del model, graph, tables
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]), weights, switched


def _switched_activation(node: Any, index: int) -> list[Any]:
    """Nodes that feed `node` its input quantized and dequantized when `SWITCH` is `index`, as it is otherwise."""
    from onnx import helper

    x, tag = node.input[0], f"squeezer_switch_{index}"
    made = [
        helper.make_node("Constant", [], [f"{tag}_index"], value=helper.make_tensor(f"{tag}_index", 7, [], [index])),
        helper.make_node("Equal", [SWITCH, f"{tag}_index"], [f"{tag}_on"]),
        helper.make_node("DynamicQuantizeLinear", [x], [f"{tag}_q", f"{tag}_scale", f"{tag}_zp"]),
        helper.make_node("DequantizeLinear", [f"{tag}_q", f"{tag}_scale", f"{tag}_zp"], [f"{tag}_dq"]),
        helper.make_node("Where", [f"{tag}_on", f"{tag}_dq", x], [f"{tag}_x"]),
    ]
    node.input[0] = f"{tag}_x"
    return made


def _run(session: Any, feeds: quantize.Feeds, weights: Weights, index: int) -> list[np.ndarray]:
    switch = {SWITCH: np.array(index, dtype=np.int64), **weights}
    return quantize.run_feeds(session, feeds, switch)
