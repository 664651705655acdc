"""Compile a Llama-family causal LM into one ONNX decoder graph built on onnxruntime's fused CPU ops.

A pure transform: a transformers float32 model in, a folder with `decoder.onnx` (+ `decoder.onnx.data`) and
`decoder.json` out. The graph is written node by node with `onnx.helper` (as onnxruntime-genai's model
builder does) rather than traced with torch.onnx: tracing yields hundreds of small ops for attention, rotary
embeddings and the cache, while each block here is a handful of fused contrib ops, which is where the speed
comes from on a CPU:

    SimplifiedLayerNormalization / SkipSimplifiedLayerNormalization   RMSNorm (and the residual add)
    MatMul, MatMulNBits or DynamicQuantizeMatMul (q, k, v packed)      one weight read per block input
    com.microsoft.GroupQueryAttention (do_rotary=1)                    rotary, KV cache write, attention
    MatMul(o_proj); packed gate/up MatMul, SiLU gate, down MatMul      the MLP

Inputs (B rows, S new tokens per row; see `squeezer.backends.onnx_decoder` for how they are fed):
    input_ids [B, S] int64       right-padded new tokens
    seqlens_k [B] int32          per row: its total length after this run, minus one
    total_sequence_length int32  scalar: max over rows of the total length (S itself for a prompt run)
    logits_index [N] int64       flat positions (row * S + column) whose logits are wanted
    past_key_i / past_value_i    [B, kv_heads, capacity, head_dim] float32, for each layer i
Outputs:
    logits [N, vocab] float32    only at `logits_index`: the lm head (vocab x hidden) runs on N rows, not B*S
    present_key_i / present_value_i  the same shape as the past; bound to the past's buffer when serving
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from squeezer.backends.decoder import context_length, eos_ids
from squeezer.compiler.decoder_int8 import matmul_int8
from squeezer.compiler.decoder_quant import SCHEMES, matmul_nbits
from squeezer.compiler.smoothing import smooth
from squeezer.hardware import INT8_DOT_UNITS, NO_UNITS

ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
STATIC_ROPE = ("default", "linear", "llama3", "yarn")  # inv_freq and scaling fixed at load: a cos/sin table
OPSET = 21
PROJECTIONS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head")  # the graph's linear layers
FORMAT = 1


@dataclass(frozen=True)
class DecoderWeights:
    """How the linear layers are stored: the weights recipe, as data.

    bits: 32 keeps float32 MatMuls; 8 or 4 is weight-only blockwise quantization (MatMulNBits) of the blocks.
    accuracy_level: MatMulNBits' compute type; 4 quantizes activations to int8 per block, the fastest on
    AVX2/AVX-512 CPUs, 0 computes in float. quantize_lm_head: the lm head (vocab x hidden, the largest single
    matrix of a small model, read whole for every token) is kept float unless asked, since every logit goes
    through it; when asked it gets `head_bits`. scheme: the grid (see `decoder_quant`); None is "best", per
    matrix the better of min/max with float offsets and symmetric, which give back GGUF Q4_1 / Q8_0 exactly.
    fold_offsets: min/max offsets ride inside each MatMulNBits as extra digit columns instead of exact
    float products of their own (one node instead of four; see `decoder_quant`).
    int8_activations: 8-bit linear layers (and the head, when quantized) as DynamicQuantizeMatMul, int8
    weights per channel times activations quantized per run (`decoder_int8`): the fastest with many
    sequences in a step. smoothing: the SmoothQuant strengths tried per layer (`smoothing`); () smooths
    nothing. row_scaled: the projections (of `PROJECTIONS`) whose input rows are each scaled to one range
    before being quantized together.
    """

    bits: int = 32
    block_size: int = 32
    accuracy_level: int = 4
    quantize_lm_head: bool = False
    head_bits: int = 8
    scheme: str | None = None
    fold_offsets: bool = False
    int8_activations: bool = False
    smoothing: tuple[float, ...] = ()
    row_scaled: tuple[str, ...] = ()
    int8_weight_bits: int = 8

    @property
    def needs(self) -> tuple[tuple[str, ...], str]:
        """Full-range s8 weights times u8 activations run as measured only on int8 dot-product units."""
        return INT8_DOT_UNITS if self.int8_activations and self.int8_weight_bits == 8 else NO_UNITS

    @property
    def int8_qmax(self) -> int:
        """The largest magnitude of an int8-activation layer's symmetric weights (127, or 63 for 7 bits)."""
        return 2 ** (self.int8_weight_bits - 1) - 1

    def __post_init__(self) -> None:
        if self.int8_activations and (self.bits != 8 or self.head_bits != 8):
            raise ValueError("int8_activations needs 8-bit weights: set bits=8 (and head_bits=8)")
        if self.int8_weight_bits not in (7, 8):
            raise ValueError(f"int8_weight_bits is 8, or 7 for CPUs without VNNI, not {self.int8_weight_bits}")
        if (self.smoothing or self.row_scaled) and not self.int8_activations:
            raise ValueError("smoothing and row_scaled shape int8 activations: set int8_activations=True")
        if any(not 0.0 <= alpha <= 1.0 for alpha in self.smoothing):
            raise ValueError(f"SmoothQuant strengths are between 0 and 1, not {self.smoothing}")
        unknown = set(self.row_scaled) - set(PROJECTIONS)
        if unknown:
            raise ValueError(f"row_scaled names projections among {', '.join(PROJECTIONS)}, not {', '.join(sorted(unknown))}")
        if self.bits not in (4, 8, 32):
            raise ValueError(f"decoder weights are 32 (float), 8 or 4 bits, not {self.bits}")
        if self.head_bits not in (4, 8):
            raise ValueError(f"a quantized lm head is 8 or 4 bits, not {self.head_bits}")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise ValueError(f"MatMulNBits accuracy_level is 0 to 4, not {self.accuracy_level}")
        if self.scheme not in (None, *SCHEMES):
            raise ValueError(f"the quantization scheme is one of {', '.join(SCHEMES)} (or unset), not {self.scheme!r}")


def unsupported_reason(config: Any) -> str | None:
    """Why this model cannot be compiled into the decoder graph, or None when it can."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        names = ", ".join(ARCHITECTURES.values())
        return f"the ONNX decoder compiles {names} only, not {model_type!r} models"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"the ONNX decoder's MLP is SiLU-gated; this model uses {config.hidden_act!r}"
    scaling = getattr(config, "rope_scaling", None) or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type not in STATIC_ROPE:
        return (f"rope scaling {rope_type!r} depends on the sequence length; the ONNX decoder supports "
                f"{', '.join(STATIC_ROPE)} only")
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if heads % kv_heads:
        return f"{heads} attention heads are not a multiple of {kv_heads} key/value heads"
    if getattr(config, "partial_rotary_factor", 1.0) != 1.0:
        return "partial rotary embeddings are not supported by the ONNX decoder"
    return None


class _Graph:
    """Collects nodes and initializers; names are unique because every one carries its layer prefix."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._shared: set[str] = set()

    def add_initializer(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def add_shared(self, name: str, array: np.ndarray) -> str:
        """An initializer that every node naming it shares: added the first time, reused after."""
        if name not in self._shared:
            self._shared.add(name)
            self.add_initializer(name, array)
        return name

    def add_node(self, op: str, inputs: list[str], outputs: list[str], domain: str = "", **attrs: Any) -> list[str]:
        from onnx import helper

        name = f"{outputs[0] or op}/node"
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs))
        return outputs


def _np(tensor: Any) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


class _Builder:
    """Writes the blocks of one model into a `_Graph` following a `DecoderWeights` recipe."""

    def __init__(self, model: Any, weights: DecoderWeights) -> None:
        self.model, self.weights, self.graph = model, weights, _Graph()
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = float(config.rms_norm_eps)

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str, bits: int) -> str:
        """x @ weight.T (+ bias): float MatMul on the transposed weight (bits 32), else DynamicQuantizeMatMul
        (int8 activations) or MatMulNBits (weight-only), per the recipe."""
        w = self.weights
        if bits != 32 and w.int8_activations:
            out = matmul_int8(self.graph, x, weight, name, name.rsplit(".", 1)[-1] in w.row_scaled, w.int8_qmax)
        elif bits != 32:
            out = matmul_nbits(self.graph, x, weight, name, bits, w.block_size, w.accuracy_level, w.scheme, w.fold_offsets)
        else:
            self.graph.add_initializer(f"{name}.weight", weight.T)
            [out] = self.graph.add_node("MatMul", [x, f"{name}.weight"], [f"{name}/matmul"])
        if bias is not None:
            self.graph.add_initializer(f"{name}.bias", bias)
            [out] = self.graph.add_node("Add", [out, f"{name}.bias"], [f"{name}/biased"])
        return out

    def rotary_cache(self, length: int) -> None:
        """cos/sin [positions, head_dim / 2] from the model's own inv_freq and attention scaling (yarn)."""
        rotary = self.model.model.rotary_emb
        inv_freq = _np(rotary.inv_freq).astype(np.float64)
        angles = np.arange(length, dtype=np.float64)[:, None] * inv_freq[None, :]
        scaling = float(getattr(rotary, "attention_scaling", 1.0))
        self.graph.add_initializer("cos_cache", (np.cos(angles) * scaling).astype(np.float32))
        self.graph.add_initializer("sin_cache", (np.sin(angles) * scaling).astype(np.float32))

    def attention(self, i: int, x: str, layer: Any) -> str:
        attn, name = layer.self_attn, f"layers.{i}.attn"
        projections = [attn.q_proj, attn.k_proj, attn.v_proj]
        weight = np.concatenate([_np(p.weight) for p in projections])
        biases = [p.bias for p in projections]
        bias = np.concatenate([_np(b) for b in biases]) if all(b is not None for b in biases) else None
        qkv = self.linear(x, weight, bias, f"{name}.qkv_proj", self.weights.bits)
        out = f"{name}/gqa"
        self.graph.add_node(
            "GroupQueryAttention",
            [qkv, "", "", f"past_key_{i}", f"past_value_{i}", "seqlens_k", "total_sequence_length",
             "cos_cache", "sin_cache"],
            [out, f"present_key_{i}", f"present_value_{i}"],
            "com.microsoft",
            num_heads=self.heads, kv_num_heads=self.kv_heads, do_rotary=1, rotary_interleaved=0,
            scale=float(getattr(attn, "scaling", self.head_dim**-0.5)),
        )
        o_bias = _np(attn.o_proj.bias) if attn.o_proj.bias is not None else None
        return self.linear(out, _np(attn.o_proj.weight), o_bias, f"{name}.o_proj", self.weights.bits)

    def mlp(self, i: int, x: str, layer: Any) -> str:
        mlp, name = layer.mlp, f"layers.{i}.mlp"
        inter = mlp.gate_proj.weight.shape[0]
        weight = np.concatenate([_np(mlp.gate_proj.weight), _np(mlp.up_proj.weight)])
        has_bias = mlp.gate_proj.bias is not None
        bias = np.concatenate([_np(mlp.gate_proj.bias), _np(mlp.up_proj.bias)]) if has_bias else None
        gate_up = self.linear(x, weight, bias, f"{name}.gate_up_proj", self.weights.bits)
        self.graph.add_initializer(f"{name}.split", np.array([inter, inter], dtype=np.int64))
        gate, up = self.graph.add_node("Split", [gate_up, f"{name}.split"], [f"{name}/gate", f"{name}/up"], axis=-1)
        [sig] = self.graph.add_node("Sigmoid", [gate], [f"{name}/sigmoid"])
        [silu] = self.graph.add_node("Mul", [gate, sig], [f"{name}/silu"])
        [act] = self.graph.add_node("Mul", [silu, up], [f"{name}/act"])
        down_bias = _np(mlp.down_proj.bias) if mlp.down_proj.bias is not None else None
        return self.linear(act, _np(mlp.down_proj.weight), down_bias, f"{name}.down_proj", self.weights.bits)

    def norm(self, x: str, residual: str | None, weight: Any, name: str) -> tuple[str, str]:
        """(normed, new residual): RMSNorm of x, or of x + residual with the sum kept for the next skip."""
        self.graph.add_initializer(f"{name}.weight", _np(weight))
        if residual is None:
            [out] = self.graph.add_node("SimplifiedLayerNormalization", [x, f"{name}.weight"], [f"{name}/out"],
                                        axis=-1, epsilon=self.eps, stash_type=1)
            return out, x
        out, _, _, total = self.graph.add_node(
            "SkipSimplifiedLayerNormalization", [x, residual, f"{name}.weight"],
            [f"{name}/out", "", "", f"{name}/residual"], "com.microsoft", epsilon=self.eps,
        )
        return out, total

    def build(self, length: int) -> Any:
        """The whole graph as an onnx ModelProto (initializers inside; saved with external data)."""
        from onnx import TensorProto, helper

        model, graph = self.model, self.graph
        embed = _np(model.model.embed_tokens.weight)
        graph.add_initializer("embed_tokens.weight", embed)
        self.rotary_cache(length)
        [x] = graph.add_node("Gather", ["embed_tokens.weight", "input_ids"], ["embed/out"])
        residual, layers = None, model.model.layers
        for i, layer in enumerate(layers):
            normed, residual = self.norm(x, residual, layer.input_layernorm.weight, f"layers.{i}.input_layernorm")
            x = self.attention(i, normed, layer)
            normed, residual = self.norm(x, residual, layer.post_attention_layernorm.weight,
                                         f"layers.{i}.post_attention_layernorm")
            x = self.mlp(i, normed, layer)
        normed, _ = self.norm(x, residual, model.model.norm.weight, "norm")
        hidden = model.config.hidden_size
        graph.add_initializer("flat_shape", np.array([-1, hidden], dtype=np.int64))
        [flat] = graph.add_node("Reshape", [normed, "flat_shape"], ["norm/flat"])
        [picked] = graph.add_node("Gather", [flat, "logits_index"], ["norm/picked"], axis=0)
        head = _np(model.lm_head.weight)
        head_bias = _np(model.lm_head.bias) if getattr(model.lm_head, "bias", None) is not None else None
        out = self.linear(picked, head, head_bias, "lm_head", self.weights.head_bits if self.weights.quantize_lm_head else 32)
        graph.add_node("Identity", [out], ["logits"])

        f32, cache = TensorProto.FLOAT, ["batch", self.kv_heads, "capacity", self.head_dim]
        inputs = [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
            helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
            helper.make_tensor_value_info("logits_index", TensorProto.INT64, ["picked"]),
        ]
        outputs = [helper.make_tensor_value_info("logits", f32, ["picked", model.config.vocab_size])]
        for i in range(len(layers)):
            for kind in ("key", "value"):
                inputs.append(helper.make_tensor_value_info(f"past_{kind}_{i}", f32, cache))
                outputs.append(helper.make_tensor_value_info(f"present_{kind}_{i}", f32, cache))
        proto = helper.make_graph(graph.nodes, "squeezer_decoder", inputs, outputs, graph.initializers)
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
        return helper.make_model(proto, opset_imports=opsets, producer_name="squeezer")


def build_decoder(model: Any, out_dir: Path, weights: DecoderWeights = DecoderWeights(),
                  calibration: Sequence[Sequence[int]] = ()) -> Path:
    """Write `decoder.onnx`, its external data and `decoder.json` for `model` into `out_dir`; returns the graph.

    `calibration` (prompt token ids) is what a recipe with `smoothing` measures activations on.
    Raises ValueError (with `unsupported_reason`'s words) for a model the graph cannot express.
    """
    import onnx

    reason = unsupported_reason(model.config)
    if reason:
        raise ValueError(reason)
    alphas: dict[str, float] = {}
    if weights.smoothing:
        if not calibration:
            raise ValueError("a recipe with smoothing needs calibration prompts to measure activations on")
        model, alphas = smooth(model, calibration, weights.smoothing, weights.row_scaled, weights.int8_qmax)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    builder = _Builder(model, weights)
    length = context_length(model.config)
    proto = builder.build(length)
    graph_path, data = out_dir / "decoder.onnx", out_dir / "decoder.onnx.data"
    if data.exists():
        data.unlink()  # external data is appended to: a stale file would be kept and grow
    onnx.save_model(proto, str(graph_path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)
    meta = {
        "format": FORMAT,
        "architecture": ARCHITECTURES[model.config.model_type],
        "num_layers": len(model.model.layers),
        "num_heads": builder.heads,
        "kv_heads": builder.kv_heads,
        "head_dim": builder.head_dim,
        "hidden_size": model.config.hidden_size,
        "vocab_size": model.config.vocab_size,
        "max_length": length,
        "eos_token_ids": sorted(eos_ids(model)),
        "inputs": ["input_ids", "seqlens_k", "total_sequence_length", "logits_index"],
        "outputs": ["logits"],
        "past": ["past_key_{}", "past_value_{}"],
        "present": ["present_key_{}", "present_value_{}"],
        "weights": asdict(weights),
        "smoothing": alphas,
    }
    (out_dir / "decoder.json").write_text(json.dumps(meta, indent=2) + "\n")
    return graph_path
