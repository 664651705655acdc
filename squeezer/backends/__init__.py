"""The backend table: a backend is chosen by name from here, never by if/elif chains."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from squeezer.backends.base import HEAD_OUTPUTS, Backend, Batch, Capabilities, split_outputs


def _torch(*args: Any, **kwargs: Any) -> Backend:
    from squeezer.backends.torch_backend import TorchBackend  # lazy: torch is an optional extra

    return TorchBackend(*args, **kwargs)


def _onnx(*args: Any, **kwargs: Any) -> Backend:
    from squeezer.backends.onnx_backend import OnnxBackend  # lazy: onnxruntime is an optional extra

    return OnnxBackend(*args, **kwargs)


def _openvino(*args: Any, **kwargs: Any) -> Backend:
    from squeezer.backends.openvino_backend import OpenVinoBackend  # lazy: openvino is an optional extra

    return OpenVinoBackend(*args, **kwargs)


# name -> factory(source, head, model_config, backend_config, max_length, **options) -> Backend; the artifact
# backends take the opened `artifact` as an option
BACKENDS: dict[str, Callable[..., Backend]] = {"torch": _torch, "onnxruntime": _onnx, "openvino": _openvino}

__all__ = ["BACKENDS", "HEAD_OUTPUTS", "Backend", "Batch", "Capabilities", "split_outputs"]
