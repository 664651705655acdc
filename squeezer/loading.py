"""Load a resolved model source into what serving needs: tokenizer and limits, task, backend.

This runs in a worker thread at startup (or on /load), never on a request's path.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezer.backends import BACKENDS, Backend
from squeezer.backends.decoder import Decoder
from squeezer.config import BackendConfig, ModelConfig
from squeezer.detect import detect_pooling, detect_task, max_length
from squeezer.scheduling.decoding_config import DecodingConfig
from squeezer.sources import ModelSource, SourceError
from squeezer.tasks import TASKS, ModelInfo, Task

if TYPE_CHECKING:
    from squeezer.artifact import Artifact

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready to run: its id, default task, the tasks it can also serve, and its backend."""

    source: ModelSource
    task: Task
    info: ModelInfo
    backend: Backend

    @property
    def model_id(self) -> str:
        return self.source.model_id

    @property
    def task_name(self) -> str:
        return self.task.name

    def tasks(self) -> list[Task]:
        """Every task this model's head can serve (feature-extraction also answers sentence-similarity)."""
        return [t for t in TASKS.values() if t.head == self.task.head and t.supports(self.info)]

    def describe(self) -> dict[str, Any]:
        caps = self.backend.capabilities()
        return {
            "task": self.task.name,
            "tasks": [t.name for t in self.tasks()],
            "backend": caps.name,
            "device": caps.device,
            "dtype": caps.dtype,
            "instances": caps.instances,
            "max_input_tokens": caps.max_length,
        }

    @property
    def memory_bytes(self) -> int:
        """What the backend holds (0 when it cannot tell)."""
        return self.backend.capabilities().memory_bytes

    def close(self) -> None:
        self.backend.close()


def generator_facts(task_name: str, backend: str = "torch", dtype: str = "float32") -> dict[str, Any]:
    """What /info says of a model that generates (one task each): the float32 torch reference by default."""
    return {"task": task_name, "tasks": [task_name], "backend": backend, "device": "cpu", "dtype": dtype}


@dataclass
class GenerativeModel:
    """A causal LM ready to generate: its tokenizer (with chat template) and its KV-cached decoder.

    `backend` and `dtype` say what runs it: the float32 torch reference, or a compiled artifact's
    onnxruntime decoder and its weights (float32, int8 or int4).
    """

    source: ModelSource
    info: ModelInfo
    decoder: Decoder
    task_name: str = "text-generation"
    backend: str = "torch"
    dtype: str = "float32"

    @property
    def model_id(self) -> str:
        return self.source.model_id

    def describe(self) -> dict[str, Any]:
        return {
            **generator_facts(self.task_name, self.backend, self.dtype),
            "max_total_tokens": self.decoder.max_length,
            "max_sequences": self.decoder.max_sequences,
            "prefix_cache_mb": cache.budget_bytes >> 20 if (cache := self.decoder.prefix_cache) is not None else 0,
            "chat_template": bool(getattr(self.info.tokenizer, "chat_template", None)),
        }

    @property
    def memory_bytes(self) -> int:
        """Weights, KV cache and prefix cache, as the decoder holds them now."""
        return self.decoder.memory_bytes

    def close(self) -> None:
        self.decoder.close()


@dataclass
class Seq2SeqModel:
    """An encoder-decoder (T5, BART, Marian) ready to generate for text2text-generation, summarization or translation."""

    source: ModelSource
    info: ModelInfo
    generator: Any  # squeezer.backends.torch_seq2seq.TorchSeq2Seq (torch is an optional extra)
    task_name: str

    @property
    def model_id(self) -> str:
        return self.source.model_id

    def describe(self) -> dict[str, Any]:
        return {**generator_facts(self.task_name), "max_input_tokens": self.info.max_length}

    @property
    def memory_bytes(self) -> int:
        return int(self.generator.memory_bytes)

    def close(self) -> None:
        self.generator.close()


Model = LoadedModel | GenerativeModel | Seq2SeqModel


def check_weights(source: ModelSource, model_config: ModelConfig) -> None:
    """Refuse pickle weights unless the user said they trust them: unpickling runs arbitrary code."""
    names = {p.suffix for p in source.weights_files()}
    if source.gguf_file or ".safetensors" in names or model_config.allow_pickle:
        return
    if names & {".bin", ".pt", ".pth"}:
        raise SourceError(
            f"{source.path} has only pickle weights (.bin), which can run arbitrary code when loaded; "
            "convert them to safetensors, or pass --allow-pickle if you trust this model"
        )
    raise SourceError(f"{source.path} holds no weights (.safetensors)")


# Tasks that accept a slow (Python) tokenizer: they only encode a prompt and decode tokens, and the models
# they serve include Marian (opus-mt), whose SentencePiece vocabularies transformers cannot convert to a fast
# tokenizer. The encoder tasks need the fast tokenizer's offsets and its speed on the event loop.
SLOW_TOKENIZER_TASKS = frozenset({"text2text-generation", "summarization", "translation"})


def load_info(source: ModelSource, model_config: ModelConfig) -> tuple[ModelInfo, str]:
    """Tokenizer, config and limits, plus the detected task (or the one the user chose)."""
    from transformers import AutoConfig, AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": model_config.trust_remote_code}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    config = AutoConfig.from_pretrained(str(source.path), **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(source.path), use_fast=True, **kwargs)
    task = model_config.task or detect_task(source.path, config, gguf=bool(source.gguf_file))
    if not getattr(tokenizer, "is_fast", False) and task not in SLOW_TOKENIZER_TASKS:
        raise SourceError(f"{source.path}: no fast (Rust) tokenizer could be built for this model")
    pooling = detect_pooling(source.path)
    return ModelInfo(tokenizer, config, max_length(source.path, config, tokenizer), pooling), task


# transformers resolves its lazy imports non-atomically: two threads loading models at once can see a
# half-imported module. Loads are rare and CPU-bound anyway, so they take turns.
_LOAD_LOCK = threading.Lock()


def load_model(
    source: ModelSource, model_config: ModelConfig, backend_config: BackendConfig, decoding: DecodingConfig = DecodingConfig()
) -> Model:
    """Load a model (called in a worker thread): weights check, tokenizer and task, backend, warm-up.

    `decoding` sizes a generative model's decoder (how many sequences decode together, its prefix cache).
    """
    with _LOAD_LOCK:
        if model_config.optimize and not source.artifact:
            source = compiled(source, model_config)
        if source.artifact:
            return _load_artifact(source, model_config, backend_config, decoding)
        check_weights(source, model_config)
        info, task_name = load_info(source, model_config)
        loader = LOADERS.get(task_name, _load_encoder)
        return loader(source, info, task_name, model_config, backend_config, decoding)


def compiled(source: ModelSource, model_config: ModelConfig) -> ModelSource:
    """`serve --optimize`: the model's artifact, built by the compiler or taken from its cache.

    A causal LM the decoder graph cannot express keeps serving on the torch reference (with a warning that
    says why), since generation works there; any other failure fails the model's load.
    """
    import hashlib

    from squeezer.compiler.cache import default_dir
    from squeezer.compiler.config import OptimizeConfig
    from squeezer.compiler.optimize import optimize
    from squeezer.compiler.optimize_decoder import UnsupportedModelError

    config = OptimizeConfig(task=model_config.task, profile=model_config.optimize_profile,
                            allow_pickle=model_config.allow_pickle, trust_remote_code=model_config.trust_remote_code)
    name = str(source.path / source.gguf_file) if source.gguf_file else str(source.path)
    key = f"{name}\0{config.profile}"  # one served artifact per source and profile
    out = default_dir() / "served" / hashlib.sha256(key.encode()).hexdigest()[:16]
    try:
        report = optimize(source, out, config)
    except UnsupportedModelError as exc:
        log.warning("%s; serving it on the float32 torch reference instead", exc)
        return source
    return ModelSource(source.model_id, Path(report.path), artifact=True)


def _load_artifact(source: ModelSource, model_config: ModelConfig, backend_config: BackendConfig, decoding: DecodingConfig) -> Model:
    """An artifact's task and head are fixed by its report; it always runs on ONNX Runtime (never torch)."""
    from squeezer.artifact import load_artifact

    artifact = load_artifact(source.path)
    config = ModelConfig(task=artifact.task, allow_pickle=False, trust_remote_code=model_config.trust_remote_code)
    info, task_name = load_info(source, config)
    onnx = BackendConfig(backend="onnxruntime", threads=backend_config.threads)
    loader = ARTIFACT_LOADERS.get(task_name, _load_onnx_encoder)
    return loader(source, artifact, info, task_name, config, onnx, decoding)


def _load_onnx_encoder(
    source: ModelSource, artifact: Artifact, info: ModelInfo, task_name: str, model_config: ModelConfig, backend_config: BackendConfig,
    decoding: DecodingConfig,
) -> LoadedModel:
    return _load_encoder(source, info, task_name, model_config, backend_config, decoding)


def _load_onnx_decoder(
    source: ModelSource, artifact: Artifact, info: ModelInfo, task_name: str, model_config: ModelConfig, backend_config: BackendConfig,
    decoding: DecodingConfig,
) -> GenerativeModel:
    """A compiled causal LM: its decoder graph on onnxruntime, with the session settings it was timed with."""
    from squeezer.backends.onnx_decoder import OnnxDecoder

    spinning = artifact.report.get("session", {}).get("allow_spinning")
    decoder = OnnxDecoder.load(artifact.path, backend_config.threads, decoding.max_batch_sequences, spinning,
                               decoding.prefix_cache_mb << 20)
    decoder.warmup()
    info.max_length = decoder.max_length
    return GenerativeModel(source, info, decoder, task_name, backend="onnxruntime", dtype=artifact.dtype)


def _load_generator(
    source: ModelSource, info: ModelInfo, task_name: str, model_config: ModelConfig, backend_config: BackendConfig, decoding: DecodingConfig
) -> GenerativeModel:
    from squeezer.backends.torch_decoder import TorchDecoder  # lazy: torch is an optional extra

    decoder = TorchDecoder.load(source, model_config, backend_config.threads, decoding.max_batch_sequences)
    decoder.warmup()
    info.max_length = decoder.max_length
    return GenerativeModel(source, info, decoder, task_name)


def _load_seq2seq(
    source: ModelSource, info: ModelInfo, task_name: str, model_config: ModelConfig, backend_config: BackendConfig, decoding: DecodingConfig
) -> Seq2SeqModel:
    from squeezer.backends.torch_seq2seq import TorchSeq2Seq  # lazy: torch is an optional extra

    if not getattr(info.config, "is_encoder_decoder", False):
        raise SourceError(f"{source.model_id}: {task_name} needs an encoder-decoder model (T5, BART, Marian, ...)")
    generator = TorchSeq2Seq.load(source, model_config, info.tokenizer, task_name, backend_config.threads)
    generator.warmup()
    return Seq2SeqModel(source, info, generator, task_name)


def _load_encoder(
    source: ModelSource, info: ModelInfo, task_name: str, model_config: ModelConfig, backend_config: BackendConfig, decoding: DecodingConfig
) -> LoadedModel:
    task = TASKS[task_name]
    if not task.supports(info):
        raise SourceError(f"{source.model_id}: this model cannot serve {task_name}")
    backend = BACKENDS[backend_config.backend](source, task.head, model_config, backend_config, info.max_length)
    backend.warmup()
    return LoadedModel(source, task, info, backend)


# Artifacts whose models load differently from encoder graphs (OnnxBackend), by task.
ARTIFACT_LOADERS = {
    "text-generation": _load_onnx_decoder,
}

# Tasks whose models load differently from the one-forward-per-input encoders.
LOADERS = {
    "text-generation": _load_generator,
    "text2text-generation": _load_seq2seq,
    "summarization": _load_seq2seq,
    "translation": _load_seq2seq,
}
