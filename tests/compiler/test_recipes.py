"""Fusion and every quantization kind, built from recipes on a tiny exported BERT, checked in the graph itself."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from squeezer.backends.base import Batch
from squeezer.backends.onnx_backend import OnnxBackend
from squeezer.compiler import recipes as r
from squeezer.compiler.build import BuildContext, Builder
from squeezer.compiler.export import encode
from squeezer.compiler.quantize import quantizable_nodes
from squeezer.compiler.validation_data import calibration_texts
from squeezer.hardware import INT8_DOT_UNITS


def ops(path: Path) -> Counter[str]:
    import onnx

    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


@pytest.fixture(scope="module")
def builder(exported_bert: Any, tmp_path_factory: pytest.TempPathFactory) -> Builder:
    exported, info = exported_bert
    feeds = [encode(info.tokenizer, [t], exported.inputs, info.max_length) for t in calibration_texts()]
    return Builder(BuildContext(exported, tmp_path_factory.mktemp("build"), feeds, feeds[:4]))


def close_to_fp32(builder: Builder, path: Path, tol: float) -> None:
    """The built graph still computes (nearly) what the exported fp32 graph does."""
    batch = Batch.pad([[101, 7592, 2088, 2003, 1037, 3231, 102]], [[0] * 7], 0)
    want = OnnxBackend.from_graph(builder.ctx.exported.path, "base").forward(batch)["last_hidden_state"]
    got = OnnxBackend.from_graph(path, "base").forward(batch)["last_hidden_state"]
    cos = float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want))
    assert cos > 1 - tol


def test_fusions_apply_to_bert(builder: Builder) -> None:
    built = builder.build(r.Recipe("fused", (r.Fuse(),)))
    found = ops(built.path)
    for fused in ("Attention", "SkipLayerNormalization", "BiasGelu", "EmbedLayerNormalization"):
        assert found[fused] >= 1, f"{fused} was not fused: {dict(found)}"
    assert built.fusions["Attention"] == 2  # one per layer
    close_to_fp32(builder, built.path, 1e-6)


def test_gelu_approximation_is_its_own_candidate(builder: Builder) -> None:
    exact = builder.build(r.Recipe("fused", (r.Fuse(),)))
    approx = builder.build(r.Recipe("fast", (r.Fuse(), r.ApproximateGelu())))
    assert ops(approx.path)["FastGelu"] == 2 and ops(approx.path)["BiasGelu"] == 0
    assert ops(exact.path)["FastGelu"] == 0 and ops(exact.path)["BiasGelu"] == 2
    assert approx.fusions["FastGelu"] == 2 and "BiasGelu" not in approx.fusions
    close_to_fp32(builder, approx.path, 1e-3)


def test_shared_prefixes_are_built_once(builder: Builder) -> None:
    a = builder.build(r.Recipe("a", (r.Fuse(), r.DynamicInt8("u8"))))
    b = builder.build(r.Recipe("b", (r.Fuse(),)))
    assert a.path != b.path and builder.build(r.Recipe("c", (r.Fuse(),))).path == b.path


@pytest.mark.parametrize(
    "step",
    [
        r.DynamicInt8("u8"),
        r.DynamicInt8("s8"),
        r.DynamicInt8("s8", reduce_range=True),
        r.DynamicInt8("u8", per_channel=True),
        r.DynamicInt8("s8", per_channel=True, reduce_range=True),
        r.DynamicInt8("s8", keep_embeddings=False),
    ],
    ids=lambda s: f"{s.weights}-pc{int(s.per_channel)}-rr{int(s.reduce_range)}-emb{int(s.keep_embeddings)}",
)
def test_dynamic_int8_variants(builder: Builder, step: r.DynamicInt8) -> None:
    import onnx

    built = builder.build(r.Recipe("q", (r.Fuse(), step)))
    found = ops(built.path)
    assert found["QAttention"] == 2 and found["DynamicQuantizeLinear"] >= 1, dict(found)
    assert found["MatMulInteger"] + found["DynamicQuantizeMatMul"] >= 4, dict(found)
    assert (found["EmbedLayerNormalization"] == 1) == step.keep_embeddings
    assert (found["QEmbedLayerNormalization"] == 1) == (not step.keep_embeddings)
    model = onnx.load(str(built.path))
    weights = {i.name: i for i in model.graph.initializer}
    matmuls = [n for n in model.graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul", "QAttention")]
    kinds = {weights[n.input[1]].data_type for n in matmuls}
    assert kinds == {onnx.TensorProto.INT8 if step.weights == "s8" else onnx.TensorProto.UINT8}
    scales = [weights[n.input[4]] for n in matmuls if n.op_type == "QAttention"]  # the weight scale
    assert scales and all((len(s.dims) == 1 and s.dims[0] > 1) == step.per_channel for s in scales)  # one per column
    close_to_fp32(builder, built.path, 0.05)


def test_sensitive_nodes_stay_float(builder: Builder) -> None:
    step = r.DynamicInt8("s8", per_channel=True, keep_sensitive=0.5)
    fused = builder.build(r.Recipe("fused", (r.Fuse(),)))
    built = builder.build(r.Recipe("keep", (r.Fuse(), step)))
    quantizable = quantizable_nodes(fused.path)
    kept = [n for n in built.kept_float if n in quantizable]
    assert len(kept) == len(quantizable) // 2
    found = ops(built.path)
    attention_kept = sum(1 for n in kept if n.startswith("Attention"))
    assert found["Attention"] == attention_kept and found["QAttention"] == 2 - attention_kept
    assert found["MatMul"] >= len(kept) - attention_kept
    assert builder.build(r.Recipe("keep", (r.Fuse(), step))).kept_float == built.kept_float  # ranking measured once
    close_to_fp32(builder, built.path, 0.05)


@pytest.mark.parametrize("per_channel", [True, False])
def test_static_qdq(builder: Builder, per_channel: bool) -> None:
    built = builder.build(r.Recipe("s", (r.Fuse(), r.StaticInt8(per_channel=per_channel))))
    found = ops(built.path)
    assert found["QuantizeLinear"] >= 4 and found["DequantizeLinear"] >= 8, dict(found)
    close_to_fp32(builder, built.path, 0.05)


def test_float16_conversion_keeps_io_types(builder: Builder) -> None:
    import onnx

    built = builder.build(r.Recipe("h", (r.Fuse(for_gpu=True), r.Float16())))
    model = onnx.load(str(built.path))
    assert any(w.data_type == onnx.TensorProto.FLOAT16 for w in model.graph.initializer)
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_recipe_table_is_data() -> None:
    names = [x.name for x in r.RECIPES]
    assert len(names) == len(set(names))
    default_cpu = r.recipes_for("cpu", "default")
    assert 4 <= len(default_cpu) <= 12 and len(r.recipes_for("cpu", "full")) > len(default_cpu)
    assert all("cuda" in x.targets for x in r.recipes_for("cuda", "default"))
    assert {x.dtype for x in r.RECIPES} == {"float32", "int8", "float16", "bfloat16"}
    assert {x.runtime for x in default_cpu} == {"onnxruntime", "openvino", "torch"}
    described = r.RECIPES[4].describe()
    assert described["steps"][1] == {"kind": "DynamicInt8", "weights": "u8", "per_channel": True, "reduce_range": False,
                                     "keep_embeddings": True, "keep_sensitive": 0.0}


def test_nncf_int8_quantizes_attention_and_keeps_the_feed_forward_float(builder: Builder) -> None:
    """The OpenVINO int8 recipe: NNCF puts int8 on the attention projections and leaves the MatMuls its `keep`
    patterns name in float; the graph still computes nearly what fp32 does (the gate judges the rest)."""
    from squeezer.backends.openvino_backend import OpenVinoBackend, import_openvino

    def inputs_of_matmuls(path: Path) -> dict[str, set[str]]:
        model = import_openvino().Core().read_model(str(path))
        return {op.get_friendly_name().split("/", 3)[-1]: {i.get_source_output().get_node().get_type_name() for i in op.inputs()}
                for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"}

    default = inputs_of_matmuls(builder.build(r.Recipe("ov-int8", (r.OpenVino("f32"), r.NncfInt8()))).path)
    everywhere = inputs_of_matmuls(builder.build(r.Recipe("all", (r.OpenVino("f32"), r.NncfInt8(keep=())))).path)
    for layer in ("layer.0", "layer.1"):
        assert "FakeQuantize" in default[f"{layer}/attention/self/query/MatMul"]
        for ffn in ("intermediate/dense/MatMul", "output/dense/MatMul"):
            assert default[f"{layer}/{ffn}"] & {"FakeQuantize", "Multiply"} == set()  # float weights and activations
            assert "FakeQuantize" in everywhere[f"{layer}/{ffn}"]
    batch = Batch.pad([[101, 7592, 2088, 2003, 1037, 3231, 102]], [[0] * 7], 0)
    want = OnnxBackend.from_graph(builder.ctx.exported.path, "base").forward(batch)["last_hidden_state"]
    graph = builder.build(r.Recipe("ov-int8", (r.OpenVino("f32"), r.NncfInt8()))).path
    got = OpenVinoBackend.from_graph(graph, "base").forward(batch)["last_hidden_state"]
    assert float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want)) > 0.95


def test_the_full_range_recipes_need_int8_dot_units_and_their_7_bit_twins_stand_in() -> None:
    by_name = {x.name: x for x in r.all_recipes()}
    avx2, vnni, amx = ["avx2", "fma"], ["avx2", "avx512_vnni"], ["avx2", "amx_int8"]
    for full, twin in (("decoder-w8a8-smooth", "decoder-w7a8-smooth"), ("int8-dyn-s8-pc-keep33", "int8-dyn-s8-pc-keep33-rr")):
        assert "int8 dot-product units" in (by_name[full].missing_features(avx2) or "")
        assert by_name[full].missing_features(vnni) is None and by_name[full].missing_features(amx) is None
        assert set(by_name[full].requires) == set(INT8_DOT_UNITS[0]) and not by_name[twin].requires
        assert by_name[twin].missing_features(avx2) is None  # tried where its twin is not, and only there
        assert "where its twin runs" in (by_name[twin].missing_features(vnni) or "")
    assert by_name["int8-static-qdq-pc"].missing_features(avx2) and by_name["int8-dyn-s8"].missing_features(avx2)
    for runs_anywhere in ("int8-dyn-u8-pc", "int8-dyn-s8-pc-rr", "ov-int8", "decoder-int8-head8", "decoder-int4-head8"):
        assert by_name[runs_anywhere].missing_features(avx2) is None, runs_anywhere


def test_fusing_logs_nothing_below_errors(exported_bert: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """ONNX Runtime's fusions report each pattern at INFO under bare module names; a server's log must not get them."""
    import logging

    from squeezer.compiler.fuse import approximate_gelu, fuse

    exported, _ = exported_bert
    caplog.set_level(logging.INFO)
    fuse(exported.path, tmp_path / "fused.onnx", r.Fuse(), exported)
    approximate_gelu(tmp_path / "fused.onnx", tmp_path / "fast.onnx")
    assert [(rec.name, rec.getMessage()) for rec in caplog.records if rec.levelno < logging.ERROR] == []
