"""`optimize(source, out_dir, config) -> Report`: the compiler, a pure transform from a model to an artifact.

Source in, artifact folder out, report inside. The steps: export the model to ONNX, run the PyTorch
reference on the validation set, build every recipe's candidate, then gate each, and time the
survivors together with the reference; the fastest survivor becomes the artifact's graph. Results are
cached under (model content hash, hardware fingerprint, versions, settings), so a second run is a copy.

That is the encoder pipeline. `PIPELINES` maps a task to another one where its models compile differently:
causal LMs (text-generation) go through `optimize_decoder`. Hashing, the cache, the staging folder and the
sealed report are shared by all.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from squeezer import heap
from squeezer.artifact import (
    GRAPH_FILE,
    content_hash,
    is_artifact,
    read_report,
    versions,
    write_report,
)
from squeezer.backends.base import Backend
from squeezer.backends.onnx_backend import OnnxBackend, default_spinning
from squeezer.compiler import cache, timing
from squeezer.compiler import validation_data as vd
from squeezer.compiler.build import TORCH_WEIGHTS, BuildContext, Builder
from squeezer.compiler.config import OptimizeConfig
from squeezer.compiler.export import OPSET, Exported, ExportError, encode, export
from squeezer.compiler.gate import Gate, gate_candidate
from squeezer.compiler.optimize_decoder import DECODER
from squeezer.compiler.package import check_destination, package_files, staging
from squeezer.compiler.pipeline import Pipeline, Progress
from squeezer.compiler.recipes import Recipe, recipes_for
from squeezer.compiler.report import Report
from squeezer.compiler.screen import Finalists
from squeezer.compiler.select import Planned, choose, plan, record_timings
from squeezer.config import BackendConfig, ModelConfig
from squeezer.hardware import gpus, hardware_fingerprint
from squeezer.loading import LoadedModel, check_weights, load_info
from squeezer.sources import ModelSource, resolve
from squeezer.tasks import TASKS, ModelInfo

log = logging.getLogger("squeezer.compiler")


def optimize(source: str | ModelSource, out_dir: str | Path, config: OptimizeConfig | None = None,
             progress: Progress | None = None) -> Report:
    """Compile `source` (a MODEL spec or a resolved ModelSource) into an artifact folder at `out_dir`."""
    config = config or OptimizeConfig()
    say = progress or log.info
    src = source if isinstance(source, ModelSource) else resolve(source)
    if is_artifact(src.path):
        raise ValueError(f"{src.path} is already a squeezer artifact; optimize the original model folder")
    out = Path(out_dir).expanduser().resolve()
    check_destination(out, src.path)
    model_config = ModelConfig(task=config.task, allow_pickle=config.allow_pickle, trust_remote_code=config.trust_remote_code)
    check_weights(src, model_config)
    info, task = read_model(src, model_config)
    pipeline = PIPELINES.get(task, ENCODER)
    examples = pipeline.examples(src, info, task, config)
    target = pipeline.target(config.target)
    say(f"hashing {src.path}")
    parts = cache_parts(src, task, target, config, examples)
    key = cache.cache_key(parts)
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else cache.default_dir()
    with staging(out) as tmp:
        hit = cache.lookup(cache_dir, key) if config.cache else None
        if hit is not None:
            say(f"cache hit: {hit}")
            reuse(hit, tmp, key)
        else:
            data = pipeline.compile(src, info, task, target, examples, config, tmp, say)
            data["source"]["content_hash"] = parts["model"]
            write_report(tmp, {**data, "cache": {"key": key, "hit": False}})
            if config.cache:
                try:
                    cache.store(cache_dir, key, tmp)
                except OSError as exc:  # a full or read-only cache must not fail the optimization
                    log.warning("could not cache the artifact in %s: %s", cache_dir, exc)
    return Report(out, read_report(out))


def encoder_examples(src: ModelSource, info: ModelInfo, task: str, config: OptimizeConfig) -> list[vd.Example]:
    """The validation set of an encoder task (the model must be able to serve the task)."""
    if not TASKS[task].supports(info):
        raise ValueError(f"{src.model_id}: this model cannot serve {task}")
    if config.validation_data:
        return vd.from_file(config.validation_data, task)
    return vd.builtin(task, info.tokenizer.mask_token)


def read_model(src: ModelSource, model_config: ModelConfig) -> tuple[ModelInfo, str]:
    """Tokenizer, config and task; a folder transformers cannot read is an export error that says why."""
    try:
        return load_info(src, model_config)
    except (ValueError, OSError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"cannot export {src.path}: {reason}") from None


def resolve_target(target: str) -> str:
    """auto: cuda when an NVIDIA GPU and onnxruntime's CUDA provider are both present, else cpu."""
    import onnxruntime as ort

    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers() and bool(gpus())
    if target == "cuda" and not has_cuda:
        raise ValueError("--target cuda needs an NVIDIA GPU and onnxruntime-gpu (pip install onnxruntime-gpu)")
    if target == "auto":
        return "cuda" if has_cuda else "cpu"
    return target


def cache_parts(src: ModelSource, task: str, target: str, config: OptimizeConfig, examples: list[vd.Example]) -> dict[str, Any]:
    """Everything an optimization's result depends on; paths and cache settings are not among them."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("cache_dir", "cache", "validation_data")}
    return {"model": source_hash(src), "task": task, "target": target, "settings": settings, "hardware": hardware_fingerprint(),
            "versions": versions(), "code": cache.code_hash(), "validation": vd.digest(examples)}


def source_hash(src: ModelSource) -> str:
    return content_hash(src.path, [src.path / src.gguf_file]) if src.gguf_file else content_hash(src.path)



def reuse(hit: Path, tmp: Path, key: str) -> None:
    """Copy a cached artifact into the staging folder, its report marked as a cache hit."""
    shutil.copytree(hit, tmp, dirs_exist_ok=True)
    write_report(tmp, {**read_report(tmp), "cache": {"key": key, "hit": True}})


def reference_model(src: ModelSource, info: ModelInfo, task: str, config: OptimizeConfig) -> LoadedModel:
    """The PyTorch reference every candidate is gated against: the torch backend, as served."""
    from squeezer.backends.torch_backend import TorchBackend

    model_config = ModelConfig(task=task, allow_pickle=config.allow_pickle, trust_remote_code=config.trust_remote_code)
    backend = TorchBackend(src, TASKS[task].head, model_config, BackendConfig(threads=config.threads), info.max_length)
    return LoadedModel(src, TASKS[task], info, backend)


def sample_feeds(info: ModelInfo, exported: Exported) -> list[dict[str, Any]]:
    """Calibration texts as single-sequence graph inputs (static calibration, sensitivity probes)."""
    return [encode(info.tokenizer, [text], exported.inputs, info.max_length) for text in vd.calibration_texts()]


def compile_model(src: ModelSource, info: ModelInfo, task: str, target: str, examples: list[vd.Example],
                  config: OptimizeConfig, tmp: Path, say: Progress) -> dict[str, Any]:
    """Export, gate and time every candidate, write the winner into `tmp`; returns the report data."""
    scratch = tmp / ".work"
    scratch.mkdir()
    head, spinning = TASKS[task].head, default_spinning(config.threads)
    finalists: Finalists | None = None
    try:
        say(f"exporting {src.model_id} ({head} head) to ONNX")
        exported = export(src.path, head, info, scratch / "exported.onnx", gguf_file=src.gguf_file,
                          trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle)
        heap.trim()  # the export's traced copy of the model: 0.7 of BERT-base's 1.2 GiB after it, not needed again
        feeds = sample_feeds(info, exported)
        builder = Builder(BuildContext(exported, scratch, feeds, feeds[:8], save_weights=weights_saver(src, info, task, config)))
        recipes = recipes_for(target, config.sweep, config.recipe_names())
        candidates, runnable = plan(recipes, hardware_fingerprint()["cpu"]["flags"], say)
        build_all(builder, runnable)
        say(f"running the PyTorch reference on {len(examples)} validation inputs")
        reference = reference_model(src, info, task, config)
        gate = Gate(reference, examples, task, config.max_accuracy_loss)
        loads = timing.workloads(config.profile, info.tokenizer, info.max_length, "token_type_ids" in exported.inputs)
        finalists = Finalists(config.finalists, reference.backend, loads, config.profile, say)
        for i, recipe, step_say in runnable:
            record, backend = evaluate(recipe, builder, gate, head, target, config.threads, spinning, info.max_length, step_say)
            candidates[i] = record
            if backend is not None:
                finalists.add(record, backend)
        ref_timing = time_all(finalists.backends, reference.backend, candidates, loads, config, say)
        chosen = choose(candidates)
        say(f"chosen: {chosen['name']} ({chosen.get('speedup', '?')}x the PyTorch reference)")
        graph_file = package_graph(scratch / chosen["graph"], tmp)
        package_files(src, info, tmp)
        return report_data(src, task, target, config, exported, gate, examples, candidates, chosen, ref_timing, spinning,
                           graph_file)
    finally:
        if finalists is not None:
            finalists.close()
        shutil.rmtree(scratch, ignore_errors=True)


def weights_saver(src: ModelSource, info: ModelInfo, task: str, config: OptimizeConfig) -> Callable[[Path], None]:
    """How a PyTorch candidate gets its weights: the source loaded as the reference is, saved as one safetensors
    file, and freed (the builds run before the reference is loaded, so it cannot be the one saved)."""
    def save(folder: Path) -> None:
        backend = reference_model(src, info, task, config).backend
        try:
            backend.save(folder)
        finally:
            backend.close()
    return save


def build_all(builder: Builder, runnable: Planned) -> None:
    """Build every candidate's graph before any model is loaded. A build's transient copies (ONNX Runtime's fusions
    and quantizer run in Python, several times the weights) then sit beside no loaded candidate nor the reference:
    with the one-graph sensitivity ranking, BERT-base's compile peak went from 4.58 to 3.44 GiB (BENCHMARKS.md).
    The graphs stay in the scratch folder either way; a failed build is remembered and reported at its gate."""
    for _, recipe, step_say in runnable:
        builder.ctx.progress = step_say
        try:
            builder.build(recipe)
        except Exception:  # the builder keeps it; `evaluate` reports it as the candidate's failure
            pass
        finally:
            heap.trim()


def evaluate(recipe: Recipe, builder: Builder, gate: Gate, head: str, target: str, threads: int, spinning: bool,
             max_length: int, say: Progress) -> tuple[dict[str, Any], Backend | None]:
    """Load one candidate (its graph built by `build_all`) and gate it; returns its report record, and its backend
    when it passed."""
    record: dict[str, Any] = {"name": recipe.name, "runtime": recipe.runtime, "dtype": recipe.dtype,
                              "recipe": recipe.describe(), "verdict": "failed", "reasons": [], "metrics": {}, "timings": {},
                              "requires": list(recipe.requires)}
    if recipe.precision is not None:
        record["precision"] = recipe.precision  # applied by the runtime at load: the artifact must carry it

    def build() -> Backend:
        built = builder.build(recipe)
        record.update(graph=str(built.path.relative_to(builder.ctx.scratch)), size_bytes=graph_size(built.path),
                      build_s=round(builder.seconds[recipe.name], 2), fusions=built.fusions, kept_float=len(built.kept_float))
        candidate = Candidate(built.path, head, target, threads, spinning, max_length, recipe.dtype, recipe.precision or "f32")
        backend = CANDIDATE_BACKENDS[recipe.runtime](candidate)
        say(f"gate on {len(gate.plans)} inputs")
        return backend

    return record, gate_candidate(record, build, gate.judge, say)


@dataclass(frozen=True)
class Candidate:
    """A built candidate and how to run it while it is gated and timed."""

    path: Path
    head: str
    target: str
    threads: int
    spinning: bool
    max_length: int
    dtype: str
    precision: str


def _onnx_candidate(c: Candidate) -> Backend:
    return OnnxBackend.from_graph(c.path, c.head, c.target, c.threads, c.spinning, c.max_length, c.dtype)


def _openvino_candidate(c: Candidate) -> Backend:
    from squeezer.backends.openvino_backend import OpenVinoBackend  # lazy: openvino is an optional extra

    return OpenVinoBackend.from_graph(c.path, c.head, c.threads, c.precision, c.max_length)


def _torch_candidate(c: Candidate) -> Backend:
    from squeezer.backends.torch_backend import TorchBackend

    return TorchBackend.from_weights(c.path.parent, c.head, c.threads, c.precision, c.max_length)


# A recipe's runtime -> how its built candidate is loaded for the gate and the clock.
CANDIDATE_BACKENDS: dict[str, Callable[[Candidate], Backend]] = {
    "onnxruntime": _onnx_candidate, "openvino": _openvino_candidate, "torch": _torch_candidate,
}


def graph_size(graph: Path) -> int:
    """A built graph's bytes with the weights stored beside it (an IR's `.bin`, an ONNX graph's `.data`)."""
    return sum(p.stat().st_size for p in (graph, graph.with_suffix(".bin"), graph.with_name(graph.name + ".data")) if p.exists())


# A chosen graph's suffix -> its file name in the artifact, and the suffixes of the files that go with it.
ARTIFACT_GRAPHS: dict[str, tuple[str, tuple[str, ...]]] = {
    ".onnx": (GRAPH_FILE, ()), ".xml": ("model.xml", (".bin",)), ".safetensors": (TORCH_WEIGHTS, ()),
}


def package_graph(graph: Path, tmp: Path) -> str:
    """Copy the chosen graph into the artifact under its runtime's file name (an IR brings its weights)."""
    name, companions = ARTIFACT_GRAPHS[graph.suffix]
    shutil.copyfile(graph, tmp / name)
    for suffix in companions:
        shutil.copyfile(graph.with_suffix(suffix), (tmp / name).with_suffix(suffix))
    return name


def time_all(backends: dict[str, Backend], reference: Backend, candidates: list[dict[str, Any]],
             loads: list[timing.Workload], config: OptimizeConfig, say: Progress) -> dict[str, Any]:
    """Time the finalists and the reference together; fill each record's timings and speedup."""
    say(f"timing {len(backends)} candidates and the reference ({config.profile}: {', '.join(w.name for w in loads)})")
    results = timing.measure({"torch": reference, **backends}, loads, config.profile, config.timing_rounds, progress=say)
    return record_timings(candidates, results, results["torch"].score)


def report_data(src: ModelSource, task: str, target: str, config: OptimizeConfig, exported: Exported, gate: Gate,
                examples: list[vd.Example], candidates: list[dict[str, Any]], chosen: dict[str, Any],
                ref_timing: dict[str, Any], spinning: bool, graph_file: str) -> dict[str, Any]:
    """squeezer.json's content (see `squeezer.artifact` for the format; files and checksum are added there)."""
    for c in candidates:
        c.pop("graph", None)
    return {
        "model_id": src.model_id, "task": task, "head": TASKS[task].head, "target": target, "profile": config.profile,
        "graph": {"file": graph_file, "inputs": list(exported.inputs), "outputs": list(exported.outputs),
                  "dtype": chosen["dtype"], "recipe": chosen["name"], "opset": OPSET, "runtime": chosen["runtime"],
                  **({"precision": chosen["precision"]} if "precision" in chosen else {})},
        "session": {"allow_spinning": spinning},
        "requires": chosen.get("requires", []),  # CPU features the chosen graph needs (any one): refused without them
        "source": {"path": str(src.path), "gguf_file": src.gguf_file},
        "hardware": hardware_fingerprint(), "versions": versions(),
        "accuracy": {"budget": gate.budget, "bounds": gate.limits,
                     "validation": {"kind": "file" if config.validation_data else "built-in", "examples": len(examples),
                                    "hash": vd.digest(examples)}},
        "reference": {"name": "torch", "timings": ref_timing},
        "candidates": candidates, "chosen": chosen["name"],
        "settings": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("cache_dir",)},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


ENCODER = Pipeline(encoder_examples, resolve_target, compile_model)
# Task -> how its models are compiled; every task not listed is an encoder task (export, fuse, quantize).
PIPELINES: dict[str, Pipeline] = {"text-generation": DECODER}
