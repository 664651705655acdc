"""The PyTorch reference backend: the model as transformers defines it, in float32 on the CPU.

It is deliberately plain, because it defines "the same answers" that every compiled variant is gated
against. torch is imported lazily so that serving a compiled artifact never needs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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


class TorchBackend:
    """Runs a transformers model with torch.inference_mode on padded batches."""

    def __init__(self, source: ModelSource, head: str, model_config: ModelConfig, config: BackendConfig, max_length: int) -> None:
        torch = import_torch()
        import transformers

        self._torch = torch
        self._head = head
        self._max_length = max_length
        torch.set_num_threads(config.threads or available_cpus())
        auto = getattr(transformers, AUTO_CLASSES[head])
        kwargs: dict[str, Any] = {"trust_remote_code": model_config.trust_remote_code, "dtype": torch.float32}
        if source.gguf_file:
            kwargs["gguf_file"] = source.gguf_file
        else:
            kwargs["use_safetensors"] = not model_config.allow_pickle or None
        self._model = pretrained(auto, source.path, **kwargs).eval()
        self._accepts_types = "token_type_ids" in self._model.forward.__code__.co_varnames
        self._bytes = module_bytes(self._model)

    def forward(self, batch: Batch) -> dict[str, np.ndarray]:
        torch = self._torch
        inputs = {"input_ids": torch.from_numpy(batch.input_ids), "attention_mask": torch.from_numpy(batch.attention_mask)}
        if self._accepts_types and batch.token_type_ids is not None:
            inputs["token_type_ids"] = torch.from_numpy(batch.token_type_ids)
        with torch.inference_mode():
            out = self._model(**inputs)
        return {name: out[name].float().numpy() for name in HEAD_OUTPUTS[self._head]}

    def warmup(self) -> None:
        self.forward(Batch.pad([[0, 1, 2, 3]], None, 0))

    def capabilities(self) -> Capabilities:
        return Capabilities("torch", "cpu", "float32", self._head, self._max_length, memory_bytes=self._bytes)

    def close(self) -> None:
        self._model = None
