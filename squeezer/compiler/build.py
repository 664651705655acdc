"""Build candidates from recipes: each step kind has one builder in `BUILDERS`, and shared prefixes
(the fused graph most int8 recipes start from) are built once per run.

A step that fails is remembered like one that was built, so that a run which builds every candidate before
gating any (`optimize`: the builds' transient copies then never sit beside the loaded candidates) reports the
failure at the gate without building it twice."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from squeezer.compiler import fuse as fusion
from squeezer.compiler import quantize, sensitivity
from squeezer.compiler.export import Exported
from squeezer.compiler.recipes import (
    ApproximateGelu,
    DynamicInt8,
    Float16,
    Fuse,
    NncfInt8,
    OpenVino,
    Recipe,
    StaticInt8,
    TorchAutocast,
)

# What a torch candidate's weights are written as, the file the PyTorch backend loads from an artifact.
TORCH_WEIGHTS = "model.safetensors"


@dataclass
class BuildContext:
    """What builders share within one run: the export, a scratch folder, sample inputs, progress, and how to
    save the source model's weights as safetensors, which the PyTorch candidates run from."""

    exported: Exported
    scratch: Path
    calibration: quantize.Feeds
    probe: quantize.Feeds
    progress: Callable[[str], None] = lambda _: None
    save_weights: Callable[[Path], None] | None = None
    rankings: dict[tuple[Any, ...], list[str]] = field(default_factory=dict)

    def sensitive(self, graph: Path, step: DynamicInt8) -> list[str]:
        """The step's fraction of most sensitive nodes, from a ranking measured once per graph and scheme."""
        if step.keep_sensitive <= 0:
            return []
        key = (graph, step.weights, step.per_channel, step.reduce_range)
        if key not in self.rankings:
            nodes = quantize.quantizable_nodes(graph)
            ranked = sensitivity.rank_sensitivity(graph, step, self.probe, nodes, self.progress)
            self.rankings[key] = [name for name, _ in ranked]
        ranking = self.rankings[key]
        return ranking[: math.ceil(step.keep_sensitive * len(ranking) - 1e-9)]


@dataclass(frozen=True)
class Built:
    """A built graph, the fused ops it holds, and the quantizable nodes deliberately left in float."""

    path: Path
    fusions: dict[str, int]
    kept_float: tuple[str, ...] = ()


def _fuse(step: Fuse, prev: Built, dst: Path, ctx: BuildContext) -> Built:
    return Built(dst, fusion.fuse(prev.path, dst, step, ctx.exported), prev.kept_float)


def _approximate_gelu(step: ApproximateGelu, prev: Built, dst: Path, ctx: BuildContext) -> Built:
    swapped = fusion.approximate_gelu(prev.path, dst)
    fusions = {k: v for k, v in prev.fusions.items() if k not in ("Gelu", "BiasGelu")}
    return Built(dst, {**fusions, "FastGelu": swapped} if swapped else fusions, prev.kept_float)


def _float16(step: Float16, prev: Built, dst: Path, ctx: BuildContext) -> Built:
    fusion.to_float16(prev.path, dst, step)
    return Built(dst, prev.fusions, prev.kept_float)


def _dynamic(step: DynamicInt8, prev: Built, dst: Path, ctx: BuildContext) -> Built:
    keep = (quantize.embedding_nodes(prev.path) if step.keep_embeddings else []) + ctx.sensitive(prev.path, step)
    quantize.dynamic(prev.path, dst, step, keep)
    return Built(dst, prev.fusions, tuple(keep))


def _static(step: StaticInt8, prev: Built, dst: Path, ctx: BuildContext) -> Built:
    quantize.static(prev.path, dst, step, ctx.calibration, [])
    return Built(dst, prev.fusions, prev.kept_float)


def decline_telemetry() -> None:
    """Keep OpenVINO's converter and NNCF from reporting usage to Google Analytics. Both count a missing consent
    file as a yes (outside CI), write a client id under ~/intel, and send each report from a process forked off the
    compile's threads: off the internet such a child hung, and held the interpreter's exit for ever (`squeezer
    optimize` printed its artifact and never returned). A compiler has no business phoning home: every consent
    check of theirs (openvino_telemetry's) answers no."""
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:  # not installed: nothing reports
        return
    OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED  # type: ignore[method-assign]


def _openvino(step: OpenVino, prev: Built, dst: Path, ctx: BuildContext) -> Built:
    """The graph as OpenVINO's IR (`.xml` and its `.bin`); the precision is applied when it is compiled."""
    from squeezer.backends.openvino_backend import import_openvino

    decline_telemetry()
    ov = import_openvino()
    xml = prev.path.with_name(prev.path.stem + "-ir.xml")
    if not xml.exists():  # one IR per source graph: the f32 and bf16 candidates share it
        ov.save_model(ov.convert_model(str(prev.path)), str(xml), compress_to_fp16=False)
    return Built(xml, prev.fusions, prev.kept_float)


def _nncf(step: NncfInt8, prev: Built, dst: Path, ctx: BuildContext) -> Built:
    """The IR quantized to int8 by NNCF, calibrated on every calibration input (a few dozen: seconds)."""
    from squeezer.backends.openvino_backend import import_openvino

    decline_telemetry()
    ov = import_openvino()
    try:
        import nncf
    except ImportError:
        raise RuntimeError("OpenVINO int8 candidates need NNCF: pip install 'squeezer[openvino]'") from None
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    nncf.set_log_level(logging.WARNING)  # its INFO lines list every node it leaves alone
    model = ov.Core().read_model(str(prev.path))
    smoothing = None if step.smooth_quant else AdvancedSmoothQuantParameters(matmul=-1)  # -1: NNCF's "off"
    quantized = nncf.quantize(
        model, nncf.Dataset(ctx.calibration), model_type=nncf.ModelType.TRANSFORMER,
        preset=nncf.QuantizationPreset(step.preset), subset_size=len(ctx.calibration),
        ignored_scope=nncf.IgnoredScope(patterns=list(step.keep), validate=False),  # a family may have none of them
        advanced_parameters=AdvancedQuantizationParameters(smooth_quant_alphas=smoothing) if smoothing else None,
    )
    xml = dst.with_suffix(".xml")
    ov.save_model(quantized, str(xml), compress_to_fp16=False)
    return Built(xml, prev.fusions, prev.kept_float)


def _torch(step: TorchAutocast, prev: Built, dst: Path, ctx: BuildContext) -> Built:
    """The source's weights as one safetensors file (a GGUF or .bin source converted): the model PyTorch runs
    under autocast, gated and timed as loaded from this file, and copied into the artifact if chosen."""
    if ctx.save_weights is None:
        raise RuntimeError("a PyTorch candidate needs the source model's weights; this build has no way to save them")
    folder = dst.with_suffix("")
    ctx.save_weights(folder)
    return Built(folder / TORCH_WEIGHTS, {}, ())


BUILDERS: dict[type, Callable[[Any, Built, Path, BuildContext], Built]] = {
    TorchAutocast: _torch,
    Fuse: _fuse,
    ApproximateGelu: _approximate_gelu,
    OpenVino: _openvino,
    NncfInt8: _nncf,
    Float16: _float16,
    DynamicInt8: _dynamic,
    StaticInt8: _static,
}


class Builder:
    """Builds recipes into graphs under `ctx.scratch`, reusing every step prefix already built (or failed)."""

    def __init__(self, ctx: BuildContext) -> None:
        self.ctx = ctx
        self._built: dict[tuple[Any, ...], Built] = {(): Built(ctx.exported.path, {})}
        self._failed: dict[tuple[Any, ...], Exception] = {}
        self.seconds: dict[str, float] = {}  # recipe name -> time spent building the steps it was first to need

    def build(self, recipe: Recipe) -> Built:
        """The recipe's graph; raises the error of the first step that failed, now or in an earlier call."""
        start = time.perf_counter()
        try:
            for i in range(len(recipe.steps)):
                self._step(recipe.steps[: i + 1])
        finally:
            self.seconds[recipe.name] = self.seconds.get(recipe.name, 0.0) + time.perf_counter() - start
        return self._built[recipe.steps]

    def _step(self, prefix: tuple[Any, ...]) -> None:
        if prefix in self._failed:
            raise self._failed[prefix]
        if prefix in self._built:
            return
        step = prefix[-1]
        dst = self.ctx.scratch / f"graph-{len(self._built) + len(self._failed)}.onnx"
        self.ctx.progress(f"{type(step).__name__.lower()}")
        try:
            self._built[prefix] = BUILDERS[type(step)](step, self._built[prefix[:-1]], dst, self.ctx)
        except Exception as exc:
            self._failed[prefix] = exc
            raise
