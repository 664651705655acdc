"""The ONNX Runtime backend: serves a compiled artifact (see `squeezer.artifact`) on CPU or CUDA.

It needs neither torch nor the compiler, so an artifact can be served from a small install
(`pip install 'squeezer[onnx]'`). The compiler times and gates candidates through this very class
(`OnnxBackend.from_graph`), so what the report measured is what serving runs, session options included
(on a CPU it serves one single-threaded instance per core, and a lone batch on every core: see `instances_for`).

Session options are chosen, not left at their defaults:
- intra-op threads = the cores this process may really use (affinity and cgroup quota), or `--threads`,
  shared among the instances (batches run at once, see `instances_for`); with several instances, a second
  session on all of them runs a batch the batcher marks alone (one client's request takes every core); one
  inter-op thread and sequential execution, since an encoder graph is one chain of ops;
- spinning: after each run ONNX Runtime's workers spin, burning most of a core for ~40 ms (measured on
  MiniLM) to catch the next run sooner. That wins ~1 ms on back-to-back runs, but a server also needs a core
  to tokenize the next requests (and other models need theirs), so workers spin only when the session
  leaves at least one core of this process free (`--threads` below the available cores);
- memory: the CPU arena stays on (no malloc per run), memory patterns are off (they are planned per input
  shape, and every batch here has a new shape); on CUDA the arena grows by what is requested, not doubling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from squeezer.artifact import Artifact, ArtifactError, load_artifact
from squeezer.backends.base import HEAD_OUTPUTS, Alone, Batch, Capabilities, instances_for
from squeezer.config import BackendConfig, ModelConfig
from squeezer.hardware import available_cpus
from squeezer.sources import ModelSource

PROVIDERS: dict[str, str] = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise RuntimeError("the onnxruntime backend needs ONNX Runtime: pip install 'squeezer[onnx]'") from None
    return onnxruntime


def default_spinning(threads: int) -> bool:
    """Spin only when the session's threads leave a core free for the rest of the process."""
    return 0 < threads < available_cpus()


def session_options(threads: int, spinning: bool) -> Any:
    """Session options tuned for serving padded encoder batches (see the module docstring for why)."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = False
    options.log_severity_level = 3  # warnings about unused initializers are noise to a server's log
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def providers_for(target: str) -> list[Any]:
    """Execution providers for a target; a CUDA artifact on an install without CUDA is refused clearly."""
    ort = import_onnxruntime()
    if target == "cuda":
        if PROVIDERS["cuda"] not in ort.get_available_providers():
            raise ArtifactError(
                "this artifact was compiled for cuda, but this onnxruntime has no CUDAExecutionProvider: "
                "install onnxruntime-gpu on a machine with an NVIDIA GPU, or optimize again with --target cpu"
            )
        preload = getattr(ort, "preload_dlls", None)  # CUDA/cuDNN from the nvidia-* wheels, when installed so
        if preload is not None:
            try:
                preload()
            except Exception:  # system CUDA libraries are then used, or session creation says what is missing
                pass
        return [(PROVIDERS["cuda"], {"arena_extend_strategy": "kSameAsRequested"}), PROVIDERS["cpu"]]
    return [PROVIDERS["cpu"]]


def graph_bytes(graph: Path) -> int:
    """A graph's size with its external weights (`NAME.data` beside it, as squeezer writes them): what a
    session keeps in memory, near enough (its instances share one session)."""
    return sum(p.stat().st_size for p in (graph, graph.with_name(graph.name + ".data")) if p.exists())


class OnnxBackend:
    """Runs an artifact's graph with ONNX Runtime; outputs are named as in HEAD_OUTPUTS."""

    def __init__(self, source: ModelSource, head: str, model_config: ModelConfig, config: BackendConfig, max_length: int,
                 artifact: Artifact | None = None) -> None:
        """`artifact`: the source's artifact when the loader has opened it already (it is verified, files hashed,
        once per load)."""
        artifact = artifact or load_artifact(source.path)
        if artifact.head != head:
            raise ArtifactError(
                f"artifact {source.path} was compiled for the {artifact.head!r} head ({artifact.task}); "
                f"it cannot serve the {head!r} head: optimize the model again with --task for that task"
            )
        self.instances = instances_for(config, artifact)
        threads = max(1, (config.threads or available_cpus()) // self.instances)
        spinning = default_spinning(config.threads)
        self._setup(artifact.graph_path, head, artifact.target, threads, spinning, max_length, artifact.dtype)
        if self.instances > 1 and artifact.target == "cpu":
            self._wide = self._session_for(artifact.graph_path, artifact.target, config.threads, spinning)
            self._bytes *= 2  # each session packs its own copy of the weights
        self.artifact: Artifact | None = artifact

    @classmethod
    def from_graph(cls, graph: Path, head: str, target: str = "cpu", threads: int = 0, spinning: bool | None = None,
                   max_length: int = 512, dtype: str = "float32") -> OnnxBackend:
        """A backend on a bare graph file: how the compiler gates and times candidates before packaging."""
        backend = cls.__new__(cls)
        spin = default_spinning(threads) if spinning is None else spinning
        backend._setup(graph, head, target, threads, spin, max_length, dtype)
        backend.artifact, backend.instances = None, 1
        return backend

    def _setup(self, graph: Path, head: str, target: str, threads: int, spinning: bool, max_length: int, dtype: str) -> None:
        self._head, self._target, self._max_length, self._dtype = head, target, max_length, dtype
        self._bytes = graph_bytes(graph)
        self._session = self._session_for(graph, target, threads, spinning)
        self._wide: Any = None  # the session on every core, for a batch that runs alone (several instances only)
        self._alone = Alone()
        if target == "cuda" and PROVIDERS["cuda"] not in self._session.get_providers():
            raise ArtifactError("onnxruntime could not start its CUDA provider (CUDA or cuDNN libraries missing?); "
                                "see its warnings above, or optimize again with --target cpu")
        self._inputs = [i.name for i in self._session.get_inputs()]
        names = [o.name for o in self._session.get_outputs()]
        missing = [name for name in HEAD_OUTPUTS[head] if name not in names]
        unknown = [name for name in self._inputs if name not in ("input_ids", "attention_mask", "token_type_ids")]
        if missing or unknown or "input_ids" not in self._inputs:
            raise ArtifactError(
                f"artifact graph {graph} does not match the {head!r} head: outputs {names}, inputs {self._inputs}"
            )
        self._outputs = list(HEAD_OUTPUTS[head])

    @staticmethod
    def _session_for(graph: Path, target: str, threads: int, spinning: bool) -> Any:
        ort = import_onnxruntime()
        try:
            return ort.InferenceSession(str(graph), session_options(threads, spinning), providers=providers_for(target))
        except ArtifactError:
            raise
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise ArtifactError(f"artifact graph {graph} cannot be loaded by onnxruntime: {exc}") from None

    def _feed(self, batch: Batch) -> dict[str, np.ndarray]:
        arrays = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                  "token_type_ids": batch.token_type_ids if batch.token_type_ids is not None else np.zeros_like(batch.input_ids)}
        return {name: np.ascontiguousarray(arrays[name], dtype=np.int64) for name in self._inputs}

    def forward(self, batch: Batch) -> dict[str, np.ndarray]:
        feed = self._feed(batch)
        if self._target == "cuda":
            values = self._run_bound(feed)
        else:
            with self._alone.entering() as none_running:
                wide = batch.alone and none_running and self._wide is not None
                values = (self._wide if wide else self._session).run(self._outputs, feed)
        return {name: np.asarray(value, dtype=np.float32) for name, value in zip(self._outputs, values)}

    def _run_bound(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """CUDA: bind inputs and outputs so ORT copies each once, instead of staging through its own buffers."""
        binding = self._session.io_binding()
        for name, array in feed.items():
            binding.bind_cpu_input(name, array)
        for name in self._outputs:
            binding.bind_output(name, "cuda")
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def warmup(self) -> None:
        self.forward(Batch.pad([[0, 1, 2, 3]], None, 0))

    def capabilities(self) -> Capabilities:
        return Capabilities("onnxruntime", self._target, self._dtype, self._head, self._max_length, self.instances,
                            self._bytes)

    def close(self) -> None:
        self._session = self._wide = None
