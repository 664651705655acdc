"""The OpenVINO backend: serves an artifact whose graph `squeezer optimize` converted to OpenVINO's IR.

OpenVINO's CPU plugin runs transformer encoders with its own fusions and, where the CPU has bf16 units
(AMX, AVX-512 BF16), in bf16: measured on an AMX machine, MiniLM at 87 passages/s against 28 for the best
ONNX Runtime int8 graph, with a minimum cosine of 0.99998 against fp32. The precision is a compile-time hint
of the plugin, not a property of the graph, so the artifact records it (`graph.precision`) and this backend
compiles the IR with it. Needs neither torch nor the compiler: the `openvino` extra alone serves it.

Shapes stay dynamic (batch and sequence length), so a new length never recompiles; threads follow
`--threads` or the cores this process may use. On a CPU with several cores it serves one instance per core, as
OpenVINO streams of one thread each, so concurrent batches never wait on each other's threads; a batch that runs
alone runs on all the cores instead (see `_setup`), so one client's latency stays what one stream on every
core gives.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from squeezer.artifact import Artifact, ArtifactError, load_artifact
from squeezer.backends.base import HEAD_OUTPUTS, Alone, Batch, Capabilities, instances_for
from squeezer.config import BackendConfig, ModelConfig
from squeezer.hardware import available_cpus
from squeezer.sources import ModelSource

PRECISIONS = {"f32": "f32", "bf16": "bf16", "f16": "f16"}  # a candidate's precision -> INFERENCE_PRECISION_HINT
DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise RuntimeError("the openvino backend needs OpenVINO: pip install 'squeezer[openvino]'") from None
    return openvino


def ir_bytes(graph: Path) -> int:
    """An IR's size: the topology (.xml) and its weights (.bin beside it)."""
    return sum(p.stat().st_size for p in (graph, graph.with_suffix(".bin")) if p.exists())


class OpenVinoBackend:
    """Runs an OpenVINO IR on the CPU; outputs are named as in HEAD_OUTPUTS."""

    def __init__(self, source: ModelSource, head: str, model_config: ModelConfig, config: BackendConfig, max_length: int,
                 artifact: Artifact | None = None) -> None:
        artifact = artifact or load_artifact(source.path)
        if artifact.head != head:
            raise ArtifactError(f"artifact {source.path} was compiled for the {artifact.head!r} head; it cannot serve {head!r}")
        precision = str(artifact.report["graph"].get("precision", "f32"))
        self._setup(artifact.graph_path, head, config.threads, precision, max_length, instances_for(config, artifact))
        self.artifact: Artifact | None = artifact

    @classmethod
    def from_graph(cls, graph: Path, head: str, threads: int = 0, precision: str = "f32", max_length: int = 512) -> OpenVinoBackend:
        """A backend on a bare IR file: how the compiler gates and times candidates before packaging."""
        backend = cls.__new__(cls)
        backend._setup(graph, head, threads, precision, max_length)
        backend.artifact = None
        return backend

    def _setup(self, graph: Path, head: str, threads: int, precision: str, max_length: int, instances: int = 1) -> None:
        """Compile the IR. One instance runs one batch at a time on every thread (OpenVINO's latency hint);
        several run that many batches at once as OpenVINO streams of one compiled model, each worker thread with
        its own infer request. Measured on 2 cores (AMD EPYC, MiniLM bf16, length-sorted batches of 6 / 32):
        two streams 399 / 397 sentences/s, two compiled models of one thread each 393 / 395 but only with CPU
        pinning off (with OpenVINO's default pinning both sat on one core: 196 / 197), one stream on two threads
        365 / 393. Streams are as fast as separate instances, hold the weights once and cannot be pinned together.

        With several streams, the same IR is also compiled once more as one stream on every thread (`_wide`), for
        a batch the batcher marks alone (`Batch.alone`): one client's request then takes all the cores instead
        of waiting on one. Measured (same machine, MiniLM bf16, two workers taking length-sorted batches of
        1 / 4 / 8 in a loop): 348 / 401 / 416 sentences/s this way against 306 / 388 / 408 from the streams
        alone and 280 / 350 / 382 from one stream on both threads; through HTTP, embed-short at 32 clients 281
        against 251 requests/s for one stream, p99 299 against 330 ms. The second compiled model shares the
        weights (10 MB more resident)."""
        ov = import_openvino()
        if precision not in PRECISIONS:
            raise ArtifactError(f"unknown OpenVINO precision {precision!r}; known: {', '.join(PRECISIONS)}")
        self._head, self._precision, self._max_length, self._bytes = head, precision, max_length, ir_bytes(graph)
        self.instances = instances
        core = ov.Core()
        properties: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": PRECISIONS[precision],
            "INFERENCE_NUM_THREADS": threads or available_cpus(),
            "PERFORMANCE_HINT": "LATENCY",  # one stream: squeezer's batcher does the batching
        }
        try:
            model = core.read_model(str(graph))
            self._compiled = core.compile_model(model, "CPU", properties | (
                {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": instances} if instances > 1 else {}))
            self._wide = core.compile_model(model, "CPU", properties) if instances > 1 else None
        except Exception as exc:  # OpenVINO raises its own RuntimeError subclasses
            raise ArtifactError(f"OpenVINO cannot load {graph}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
        self._wide_request = self._wide.create_infer_request() if self._wide is not None else None
        self._alone = Alone()
        self._inputs = [port.get_any_name() for port in self._compiled.inputs]
        names = {name for port in self._compiled.outputs for name in port.get_names()}
        missing = [name for name in HEAD_OUTPUTS[head] if name not in names]
        if missing or "input_ids" not in self._inputs:
            raise ArtifactError(f"IR {graph} does not match the {head!r} head: outputs {sorted(names)}, inputs {self._inputs}")
        self._outputs = list(HEAD_OUTPUTS[head])
        self._local = threading.local()  # an infer request per worker thread: requests are not thread-safe

    def _request(self) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        return request

    def forward(self, batch: Batch) -> dict[str, np.ndarray]:
        arrays = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                  "token_type_ids": batch.token_type_ids if batch.token_type_ids is not None else np.zeros_like(batch.input_ids)}
        feed = {name: np.ascontiguousarray(arrays[name], dtype=np.int64) for name in self._inputs}
        with self._alone.entering() as none_running:  # the wide request serves one forward at a time
            wide = batch.alone and none_running and self._wide_request is not None
            request = self._wide_request if wide else self._request()
            request.infer(feed)
            return {name: np.asarray(request.get_tensor(name).data, dtype=np.float32).copy() for name in self._outputs}

    def warmup(self) -> None:
        self.forward(Batch.pad([[0, 1, 2, 3]], None, 0))

    def capabilities(self) -> Capabilities:
        return Capabilities("openvino", "cpu", DTYPES[self._precision], self._head, self._max_length, self.instances,
                            self._bytes)

    def close(self) -> None:
        self._compiled = self._wide = self._wide_request = None
