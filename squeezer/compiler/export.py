"""Export a transformers model with one head to an fp32 ONNX graph with dynamic batch and sequence axes.

Why `torch.onnx.export(..., dynamo=False)` (the TorchScript tracer) rather than optimum-onnx or the dynamo
exporter: ONNX Runtime's transformer fusions (`squeezer.compiler.fuse`) match the op patterns the tracer
emits for BERT-family attention, so attention, layer-norm and GELU fusions all apply (checked here on
BERT, DistilBERT, RoBERTa and MiniLM); the dynamo exporter emits different patterns those fusions miss.
optimum-onnx's `main_export` uses the same tracer underneath, so it would add two dependencies and an
exporter-config layer for no difference on these encoders. The model is loaded with eager attention,
whose graph is the one the fusions know (SDPA exports differently). Every export is verified: the graph
must match PyTorch on a batch of a shape it was not traced with, or the axes were not really dynamic.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from squeezer.backends.base import HEAD_OUTPUTS
from squeezer.tasks import ModelInfo

OPSET = 17
AXES = {0: "batch", 1: "sequence"}
VERIFY_TEXTS = ("A first text to check the export.", "A second, longer text with more tokens, to check a new shape!", "Three.")


class ExportError(RuntimeError):
    """The model cannot be exported to ONNX; the message says why."""


@dataclass(frozen=True)
class Exported:
    """An exported graph and the facts later steps need (fusion shapes, input names)."""

    path: Path
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    num_heads: int
    hidden_size: int
    model_type: str


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise RuntimeError("optimizing a model needs PyTorch for export: pip install 'squeezer[torch,onnx]'") from None
    return torch


def load_model(path: Path, head: str, gguf_file: str | None, trust_remote_code: bool, allow_pickle: bool) -> Any:
    """The transformers model for `head`, with eager attention (the graph the fusions recognise)."""
    torch = import_torch()
    import transformers

    from squeezer.backends.torch_backend import AUTO_CLASSES, pretrained

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": torch.float32, "attn_implementation": "eager"}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    else:
        kwargs["use_safetensors"] = not allow_pickle or None
    try:
        return pretrained(getattr(transformers, AUTO_CLASSES[head]), path, **kwargs).eval()
    except (ValueError, KeyError, OSError, ImportError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"cannot export {path}: transformers cannot load it as a {head!r} model ({first[:300]})") from None


def input_names(model: Any, tokenizer: Any) -> tuple[str, ...]:
    """Graph inputs: ids and mask, plus segment ids when both the model and its tokenizer use them."""
    accepted = inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in accepted and "token_type_ids" in tokenizer.model_input_names:
        names.append("token_type_ids")
    return tuple(names)


def head_outputs(model: Any, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> Any:
    """Wrap the model so the graph takes `inputs` positionally and returns exactly the head's outputs, in
    HEAD_OUTPUTS order (a base model would also export its pooler, which no task reads)."""
    torch = import_torch()

    class HeadOutputs(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> tuple[Any, ...]:
            out = self.model(**dict(zip(inputs, tensors)))
            return tuple(out[name] for name in outputs)

    return HeadOutputs().eval()


def dynamic_axes(head: str, inputs: tuple[str, ...]) -> dict[str, dict[int, str]]:
    """Batch and sequence axes are dynamic; a per-sequence output (classification logits) has no sequence axis."""
    axes = {name: AXES for name in inputs}
    for name, per_token in HEAD_OUTPUTS[head].items():
        axes[name] = AXES if per_token else {0: "batch"}
    return axes


def encode(tokenizer: Any, texts: tuple[str, ...] | list[str], names: tuple[str, ...], max_length: int) -> dict[str, np.ndarray]:
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="np")
    if "token_type_ids" in names and "token_type_ids" not in enc:
        enc["token_type_ids"] = np.zeros_like(enc["input_ids"])
    return {name: np.asarray(enc[name], dtype=np.int64) for name in names}


def export(path: Path, head: str, info: ModelInfo, dest: Path, *, gguf_file: str | None = None,
           trust_remote_code: bool = False, allow_pickle: bool = False) -> Exported:
    """Export `path` with `head` to `dest` (fp32, opset 17, dynamic batch and sequence axes), verified."""
    torch = import_torch()
    model = load_model(path, head, gguf_file, trust_remote_code, allow_pickle)
    inputs, outputs = input_names(model, info.tokenizer), tuple(HEAD_OUTPUTS[head])
    wrapper = head_outputs(model, inputs, outputs)
    dummy = encode(info.tokenizer, ["a short text", "a somewhat longer text used to trace the export"], inputs, info.max_length)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer and deprecation warnings: the verification below decides
            torch.onnx.export(
                wrapper, tuple(torch.from_numpy(dummy[n]) for n in inputs), str(dest), dynamo=False,
                input_names=list(inputs), output_names=list(outputs), opset_version=OPSET, do_constant_folding=True,
                dynamic_axes=dynamic_axes(head, inputs),
            )
    except Exception as exc:  # the tracer raises many types; all mean the same to the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        arch = ", ".join(getattr(model.config, "architectures", None) or [model.config.model_type])
        raise ExportError(f"cannot export {arch} to ONNX: {reason[:400]}") from None
    verify(wrapper, dest, encode(info.tokenizer, VERIFY_TEXTS, inputs, info.max_length), outputs)
    config = model.config
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None) or 0
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", None) or 0
    return Exported(dest, inputs, outputs, int(heads), int(hidden), str(config.model_type))


def verify(wrapper: Any, graph: Path, feed: dict[str, np.ndarray], outputs: tuple[str, ...]) -> None:
    """Run the graph and PyTorch on a batch shaped unlike the traced one; they must agree."""
    torch = import_torch()
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        got = session.run(list(outputs), feed)
    except Exception as exc:
        raise ExportError(f"the exported graph does not run in onnxruntime: {str(exc)[:400]}") from None
    with torch.no_grad():
        want = wrapper(*(torch.from_numpy(feed[name]) for name in feed))
    for name, actual, expected in zip(outputs, got, want):
        expected = expected.float().numpy()
        scale = max(1.0, float(np.abs(expected).max()))
        if actual.shape != expected.shape or float(np.abs(actual - expected).max()) > 1e-3 * scale:
            raise ExportError(
                f"the exported graph disagrees with PyTorch on output {name!r} for a new input shape "
                f"{tuple(feed['input_ids'].shape)}: the model's code is not traceable with dynamic axes"
            )
