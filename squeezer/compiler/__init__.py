"""The compiler: `optimize(source, out_dir, config)` turns a model into a validated ONNX artifact.

Heavy dependencies (torch, onnx, onnxruntime) are imported when a function needs them, so importing this
package is cheap and says which extra to install when one is missing.
"""

from __future__ import annotations

from typing import Any

from squeezer.compiler.config import OptimizeConfig

__all__ = ["OptimizeConfig", "Report", "optimize"]


def __getattr__(name: str) -> Any:
    if name == "optimize":
        from squeezer.compiler.optimize import optimize

        return optimize
    if name == "Report":
        from squeezer.compiler.report import Report

        return Report
    raise AttributeError(name)
