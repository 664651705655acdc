"""The sensitivity ranking replays each node's quantization on one float graph: it must measure what quantizing
that node alone with onnxruntime's quantizer does (tiny BERT, fused: 2 Attention and 6 MatMul nodes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from squeezer.compiler import quantize, sensitivity
from squeezer.compiler import recipes as r
from squeezer.compiler.export import encode
from squeezer.compiler.fuse import fuse
from squeezer.compiler.validation_data import calibration_texts
from squeezer.hardware import hardware_fingerprint


@pytest.fixture(scope="module")
def fused(exported_bert: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, quantize.Feeds]:
    exported, info = exported_bert
    path = tmp_path_factory.mktemp("sensitivity") / "fused.onnx"
    fuse(exported.path, path, r.Fuse(), exported)
    return path, [encode(info.tokenizer, [t], exported.inputs, info.max_length) for t in calibration_texts()[:6]]


def quantized_alone(src: Path, step: r.DynamicInt8, probe: quantize.Feeds, node: str, reference: list[np.ndarray]) -> float:
    """The error the old way: the graph quantized by onnxruntime with only `node`, and run."""
    import onnxruntime as ort

    out = src.with_name(f"one-{abs(hash(node))}.onnx")
    quantize.dynamic(src, out, step, exclude=[], only=[node])
    got = quantize.run_feeds(ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]), probe)
    return max(quantize.relative_error(a, b) for a, b in zip(got, reference))


@pytest.mark.parametrize("step", [r.DynamicInt8("s8", per_channel=True), r.DynamicInt8("u8"),
                                  r.DynamicInt8("s8", per_channel=True, reduce_range=True)],
                         ids=["s8-per-channel", "u8-per-tensor", "s8-per-channel-7-bit"])
def test_replayed_errors_match_quantizing_each_node_alone(fused: tuple[Path, quantize.Feeds], step: r.DynamicInt8) -> None:
    import onnxruntime as ort

    units, why = step.needs
    if units and not set(units) & set(hardware_fingerprint()["cpu"]["flags"]):
        pytest.skip(f"this step {why}; a sweep on this CPU never tries it, so never ranks for it")
    src, probe = fused
    nodes = quantize.quantizable_nodes(src)
    assert sum(n.startswith("Attention") for n in nodes) == 2 and len(nodes) == 8
    reference = quantize.run_feeds(ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]), probe)
    lines: list[str] = []
    ranked = sensitivity.rank_sensitivity(src, step, probe, nodes, lines.append)
    assert len(lines) == 1 + len(nodes) and lines[-1].startswith(f"sensitivity {len(nodes)}/{len(nodes)}")
    replayed = dict(ranked)
    alone = {node: quantized_alone(src, step, probe, node, reference) for node in nodes}
    for node in nodes:
        assert replayed[node] > 1e-5  # every node's quantization moves the outputs a little
        assert replayed[node] == pytest.approx(alone[node], rel=0.01), node
    assert [n for n, _ in ranked] == sorted(nodes, key=lambda n: -alone[n])


def test_switched_off_the_graph_is_the_float_graph(fused: tuple[Path, quantize.Feeds]) -> None:
    """With no node switched on (and the float weights fed), the switch graph computes the source graph's outputs."""
    import onnxruntime as ort

    src, probe = fused
    nodes = quantize.quantizable_nodes(src)
    session, weights, switched = sensitivity._switch_session(src, nodes)
    assert sorted(switched) == sorted(nodes) and {feed for feed, _ in switched.values()} == set(weights)
    want = quantize.run_feeds(ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]), probe)
    got = sensitivity._run(session, probe, weights, -1)
    assert max(quantize.relative_error(a, b) for a, b in zip(got, want)) < 1e-5


def test_a_tied_weight_stays_float_where_the_quantizer_leaves_it(tmp_path: Path) -> None:
    """An embedding table that a later MatMul also multiplies by (tied weights): quantizing the MatMul alone, the
    quantizer leaves the lookup's table float, and the replay must measure the same error."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.normal(size=(32, 16)).astype(np.float32), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["h"], name="lookup"), helper.make_node("Tanh", ["h"], ["t"], name="squash"),
         helper.make_node("Transpose", ["table"], ["table_t"], name="flip"),
         helper.make_node("MatMul", ["t", "table_t"], ["t2"], name="square"),
         helper.make_node("MatMul", ["t2", "table"], ["y"], name="head")],
        "tied", [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 16])], [table])
    src = tmp_path / "tied.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    assert quantize.quantizable_nodes(src) == ["head"]
    probe = [{"ids": rng.integers(0, 32, size=5)} for _ in range(3)]
    step = r.DynamicInt8("s8", per_channel=True, reduce_range=True)  # 7-bit: exact on every CPU's int8 kernels
    reference = quantize.run_feeds(ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]), probe)
    replayed = dict(sensitivity.rank_sensitivity(src, step, probe, ["head"], lambda _: None))
    assert replayed["head"] > 1e-4
    assert replayed["head"] == pytest.approx(quantized_alone(src, step, probe, "head", reference), rel=0.01)
