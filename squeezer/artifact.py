"""The compiled-artifact format: what `squeezer optimize` writes and what the artifact backends serve.

An artifact is a folder: the chosen graph (ONNX, an OpenVINO IR, or safetensors weights for PyTorch), the tokenizer and config files copied from the source (so
task, pooling and limits are detected exactly as for the source), and `squeezer.json`, the report. The
report carries a format version, a checksum of itself and of every file, the hardware it was measured on
and the library versions, so a truncated graph, a hand-edited report or an artifact from another format
version is refused at load with a message that says what is wrong, instead of serving wrong answers.

This module sits below both the compiler and the backend: it imports neither, nor torch nor onnxruntime.
Hardware probing (cores, CPU flags, GPUs) lives in squeezer.hardware; this module keeps `versions()`,
the software half of what a report records.

squeezer.json, format version 1 (keys in REQUIRED_KEYS must be present; the rest is the report):
  format, format_version       "squeezer-artifact", 1
  model_id, task, head         what the artifact serves (head: a key of backends.base.HEAD_OUTPUTS, or
                               "causal-lm" for text-generation)
  target, profile              "cpu" | "cuda"; "latency" | "throughput"
  graph                        {file, inputs, outputs, dtype, recipe, opset, runtime, precision}: the chosen
                               graph; runtime onnxruntime (model.onnx), openvino (model.xml + .bin) or torch
                               (model.safetensors), precision the compute precision the runtime is asked for
                               (f32 | bf16 | f16); a causal LM's is decoder.onnx (kind "decoder"), beside
                               decoder.json (cache layout, EOS), served by backends.onnx_decoder;
                               dtype float32 | bfloat16 | float16 | int8 | int4 (weights)
  files                        {relative path: sha256} for every file of the folder but this one
  source                       {path, gguf_file, content_hash}
  hardware, versions           hardware.hardware_fingerprint() and versions() where it was measured
  accuracy                     {budget, bounds, validation: {kind, examples, hash}}
  reference, candidates        PyTorch timings; per candidate: recipe, metrics, verdict, reasons, timings
  chosen, settings, session, created, cache
  checksum                     sha256 of the canonical JSON of everything above
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

FORMAT = "squeezer-artifact"
FORMAT_VERSION = 1
REPORT_FILE = "squeezer.json"
GRAPH_FILE = "model.onnx"
# Files never copied from a source into an artifact: weights (the graph replaces them) and VCS metadata.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".onnx_data", ".gguf", ".h5", ".msgpack", ".ckpt", ".ot", ".tflite")
REQUIRED_KEYS = ("format", "format_version", "model_id", "task", "head", "target", "graph", "files", "checksum")
VERSIONED = ("squeezer", "onnxruntime", "onnxruntime-gpu", "openvino", "onnx", "numpy", "transformers", "tokenizers", "torch")


class ArtifactError(ValueError):
    """An artifact folder is missing, corrupt or of another format; the message says how to fix it."""


# ----------------------------------------------------------------------------------------------- hashes


def file_hash(path: Path) -> str:
    """sha256 of a file, read in chunks so a large graph does not need its size in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(folder: Path, files: Iterable[Path] | None = None) -> str:
    """One sha256 over a model's files (names and bytes): the same model gives the same hash anywhere."""
    digest = hashlib.sha256()
    chosen = sorted(files) if files is not None else sorted(p for p in folder.rglob("*") if p.is_file())
    for path in chosen:
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue  # .git, .cache, editor files: not part of the model
        digest.update(str(rel).encode() + b"\0" + file_hash(path).encode() + b"\n")
    return digest.hexdigest()


def canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def report_checksum(report: dict[str, Any]) -> str:
    """sha256 of the report without its own checksum field: any edit to squeezer.json changes it."""
    return hashlib.sha256(canonical({k: v for k, v in report.items() if k != "checksum"})).hexdigest()


# ------------------------------------------------------------------------------------------- versions


def versions() -> dict[str, str]:
    """Versions of the libraries that decide what a graph computes and how fast."""
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


# -------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Artifact:
    """A validated artifact folder and its report."""

    path: Path
    report: dict[str, Any]

    @property
    def graph_path(self) -> Path:
        return self.path / self.report["graph"]["file"]

    @property
    def runtime(self) -> str:
        """What runs the graph: "onnxruntime" (an ONNX graph), "openvino" (an IR) or "torch" (safetensors weights run
        under autocast); older reports name none."""
        return str(self.report["graph"].get("runtime", "onnxruntime"))

    @property
    def head(self) -> str:
        return str(self.report["head"])

    @property
    def task(self) -> str:
        return str(self.report["task"])

    @property
    def target(self) -> str:
        return str(self.report["target"])

    @property
    def profile(self) -> str:
        """What the candidates were timed for: "latency" (one request alone) or "throughput" (under load)."""
        return str(self.report.get("profile", "latency"))

    @property
    def inputs(self) -> list[str]:
        return list(self.report["graph"]["inputs"])

    @property
    def outputs(self) -> list[str]:
        return list(self.report["graph"]["outputs"])

    @property
    def dtype(self) -> str:
        return str(self.report["graph"].get("dtype", "float32"))


def is_artifact(path: str | Path) -> bool:
    """Whether a folder looks like a squeezer artifact (has squeezer.json); says nothing about validity."""
    return (Path(path) / REPORT_FILE).is_file()


def _fail(path: Path, problem: str) -> ArtifactError:
    return ArtifactError(f"artifact {path}: {problem}; rebuild it with `squeezer optimize`")


def read_report(path: str | Path) -> dict[str, Any]:
    """Parse and check squeezer.json: format, version, required fields and its own checksum."""
    folder = Path(path)
    file = folder / REPORT_FILE
    if not file.is_file():
        raise ArtifactError(f"{folder} is not a squeezer artifact: it has no {REPORT_FILE} (build one with `squeezer optimize`)")
    try:
        report = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(folder, f"{REPORT_FILE} is not valid JSON ({exc})") from None
    if not isinstance(report, dict) or report.get("format") != FORMAT:
        found = report.get("format") if isinstance(report, dict) else type(report).__name__
        raise _fail(folder, f"{REPORT_FILE} is not a squeezer artifact report (format {found!r})")
    version = report.get("format_version")
    if version != FORMAT_VERSION:
        raise _fail(folder, f"format version {version!r} is not supported by this squeezer (it reads version {FORMAT_VERSION})")
    missing = [key for key in REQUIRED_KEYS if key not in report]
    if missing:
        raise _fail(folder, f"{REPORT_FILE} lacks {', '.join(missing)}")
    if report["checksum"] != report_checksum(report):
        raise _fail(folder, f"{REPORT_FILE} was modified after it was written (its checksum does not match)")
    return report


def load_artifact(path: str | Path, *, verify_files: bool = True) -> Artifact:
    """Open an artifact, refusing a corrupt or mismatched one with a clear message.

    With `verify_files`, every file listed in the report is hashed: a truncated or replaced graph would
    otherwise load (or crash) and answer differently from what the report promises.
    """
    folder = Path(path)
    report = read_report(folder)
    graph = report["graph"]
    if not isinstance(graph, dict) or graph.get("file") not in report["files"]:
        raise _fail(folder, f"{REPORT_FILE} names no graph file among its files")
    for name, expected in report["files"].items():
        file = folder / name
        if not file.is_file():
            raise _fail(folder, f"{name} is missing")
        if verify_files and file_hash(file) != expected:
            raise _fail(folder, f"{name} does not match the checksum in {REPORT_FILE} (truncated or modified)")
    check_cpu(folder, report)
    return Artifact(folder, report)


def check_cpu(folder: Path, report: dict[str, Any]) -> None:
    """Refuse an artifact whose chosen graph depends on CPU features this machine lacks (`requires`: any one of
    them), rather than serve it silently slower, or in another precision, than its report measured."""
    from squeezer.hardware import cpu_info

    needed = report.get("requires") or []
    if needed and not set(needed) & set(cpu_info()["flags"]):
        raise _fail(folder, f"it was chosen for a CPU with {' or '.join(needed)}, which this CPU lacks: "
                            "optimize the model again on this machine")


# -------------------------------------------------------------------------------------------- writing


def copy_model_files(source: Path, dest: Path) -> list[str]:
    """Copy a source folder's tokenizer, config and sentence-transformers files, but not its weights."""
    copied = []
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if not path.is_file() or path.suffix in WEIGHT_SUFFIXES or any(p.startswith(".") for p in rel.parts):
            continue
        if rel.name == REPORT_FILE:
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest / rel)
        copied.append(str(rel))
    return copied


def write_report(folder: Path, report: dict[str, Any]) -> dict[str, Any]:
    """Hash every file of the artifact into the report, seal it with its checksum, and write it."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != REPORT_FILE)
    sealed = {**report, "format": FORMAT, "format_version": FORMAT_VERSION,
              "files": {str(p.relative_to(folder)): file_hash(p) for p in files}}
    sealed["checksum"] = report_checksum(sealed)
    (folder / REPORT_FILE).write_text(json.dumps(sealed, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return sealed
