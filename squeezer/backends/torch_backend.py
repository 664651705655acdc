"""The PyTorch backend: the model as transformers defines it, on the CPU.

Served from a model folder it is the float32 reference, deliberately plain, because it defines "the same
answers" that every compiled variant is gated against. Served from an artifact whose chosen candidate is
`torch-bf16`, it runs the artifact's float32 weights under `torch.autocast` in bf16, the precision the report
records (the gate measured that candidate exactly so). torch is imported lazily so that serving a compiled
graph never needs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from contextlib import nullcontext
from pathlib import Path

from squeezer.artifact import Artifact, ArtifactError
from squeezer.backends.base import HEAD_OUTPUTS, Batch, Capabilities
from squeezer.config import BackendConfig, ModelConfig
from squeezer.hardware import available_cpus
from squeezer.sources import ModelSource

# Head name -> the transformers auto class that loads it.
AUTO_CLASSES: dict[str, str] = {
    "base": "AutoModel",
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "masked-lm": "AutoModelForMaskedLM",
    "question-answering": "AutoModelForQuestionAnswering",
}


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise RuntimeError("the torch backend needs PyTorch: pip install 'squeezer[torch]'") from None
    return torch


# Weights a checkpoint may lack while the model still answers as its authors meant: sentence-transformers
# checkpoints drop BERT's pooler, which their mean pooling never reads.
OPTIONAL_WEIGHTS = ("pooler.",)


def pretrained(auto: Any, path: Any, **kwargs: Any) -> Any:
    """`auto.from_pretrained(path, ...)`, refusing files that lack weights the model needs.

    transformers fills a missing weight with random values and only logs a warning, so a folder whose weights
    belong to another architecture (or lost a file) would load and answer, wrongly. Here that is an error that
    says which weights are missing.
    """
    model, info = auto.from_pretrained(str(path), output_loading_info=True, **kwargs)
    missing = sorted(k for k in info.get("missing_keys", ()) if not any(part in k for part in OPTIONAL_WEIGHTS))
    if missing:
        arch = type(model).__name__
        raise ValueError(f"{len(missing)} weights that {arch} needs are not in the model's files "
                         f"(first: {', '.join(missing[:3])}): they belong to another architecture or are "
                         "incomplete, and serving them would answer with random weights")
    return model


def module_bytes(model: Any) -> int:
    """Bytes of a module's parameters and buffers as loaded: a GGUF file dequantized to float32, or float16
    safetensors upcast, hold several times their file's size, so files are no measure of memory."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)

# A candidate's precision -> the dtype autocast runs matrix products in (None: plain float32).
AUTOCAST = {"f32": None, "bf16": "bfloat16"}


class TorchBackend:
    """Runs a transformers model with torch.inference_mode on padded batches (under autocast when asked)."""

    def __init__(self, source: ModelSource, head: str, model_config: ModelConfig, config: BackendConfig, max_length: int,
                 artifact: Artifact | None = None) -> None:
        kwargs: dict[str, Any] = {"trust_remote_code": model_config.trust_remote_code}
        if artifact is not None:  # the weights the compiler wrote, always safetensors
            if artifact.head != head:
                raise ArtifactError(f"artifact {source.path} was compiled for the {artifact.head!r} head; it cannot serve {head!r}")
            kwargs["use_safetensors"] = True
        elif source.gguf_file:
            kwargs["gguf_file"] = source.gguf_file
        else:
            kwargs["use_safetensors"] = not model_config.allow_pickle or None
        precision = str(artifact.report["graph"].get("precision", "f32")) if artifact is not None else "f32"
        self._load(source.path, head, config.threads, precision, max_length, kwargs)

    @classmethod
    def from_weights(cls, folder: Path, head: str, threads: int = 0, precision: str = "f32",
                     max_length: int = 512) -> TorchBackend:
        """A backend on a folder of safetensors weights: how the compiler gates and times a torch candidate."""
        backend = cls.__new__(cls)
        backend._load(folder, head, threads, precision, max_length, {"use_safetensors": True})
        return backend

    def _load(self, path: Path, head: str, threads: int, precision: str, max_length: int, kwargs: dict[str, Any]) -> None:
        torch = import_torch()
        import transformers

        if precision not in AUTOCAST:
            raise ArtifactError(f"unknown PyTorch precision {precision!r}; known: {', '.join(AUTOCAST)}")
        self._torch, self._head, self._max_length, self._precision = torch, head, max_length, precision
        torch.set_num_threads(threads or available_cpus())
        auto = getattr(transformers, AUTO_CLASSES[head])
        self._model = pretrained(auto, path, dtype=torch.float32, **kwargs).eval()
        self._accepts_types = "token_type_ids" in self._model.forward.__code__.co_varnames
        self._bytes = module_bytes(self._model)
        dtype = AUTOCAST[precision]
        self._autocast = (lambda: torch.autocast("cpu", dtype=getattr(torch, dtype))) if dtype else nullcontext

    def forward(self, batch: Batch) -> dict[str, np.ndarray]:
        torch = self._torch
        inputs = {"input_ids": torch.from_numpy(batch.input_ids), "attention_mask": torch.from_numpy(batch.attention_mask)}
        if self._accepts_types and batch.token_type_ids is not None:
            inputs["token_type_ids"] = torch.from_numpy(batch.token_type_ids)
        with torch.inference_mode(), self._autocast():
            out = self._model(**inputs)
        return {name: out[name].float().numpy() for name in HEAD_OUTPUTS[self._head]}

    def save(self, folder: Path) -> None:
        """Write the loaded model as safetensors in one file (config beside it): a torch candidate's weights."""
        self._model.save_pretrained(folder, safe_serialization=True, max_shard_size="1000GB")

    def warmup(self) -> None:
        self.forward(Batch.pad([[0, 1, 2, 3]], None, 0))

    def capabilities(self) -> Capabilities:
        dtype = AUTOCAST[self._precision] or "float32"
        return Capabilities("torch", "cpu", dtype, self._head, self._max_length, memory_bytes=self._bytes)

    def close(self) -> None:
        self._model = None
