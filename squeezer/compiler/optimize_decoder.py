"""text-generation: compile a causal LM into an ONNX decoder artifact, the decoder half of `optimize`.

The float32 torch model is loaded once (a GGUF file is dequantized by transformers) and is both the gate's
reference (`TorchDecoder`, exactly what `squeezer serve` runs without an artifact) and the source every
candidate is built from: each recipe of `DECODER_RECIPES` is one `DecoderWeights` that `build_decoder`
writes into its own folder (decoder.onnx, its external data, decoder.json), every one before any is loaded.
Each candidate then loads as the server would load it (`OnnxDecoder`), is gated against the reference on the prompt set
(`generation_gate`), and the survivors are timed with the reference (`decoder_timing`); the fastest survivor's
folder becomes the artifact, next to the tokenizer and config (chat template included) and squeezer.json.

A model the graph builder cannot express (`unsupported_reason`) is refused up front with that reason, as an
`UnsupportedModelError`: `serve --optimize` then keeps serving it on the torch reference.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezer import heap
from squeezer.artifact import versions
from squeezer.backends.decoder import Decoder
from squeezer.backends.onnx_decoder import SPINNING, OnnxDecoder
from squeezer.compiler import decoder_timing
from squeezer.compiler import generation_data as gd
from squeezer.compiler import validation_data as vd
from squeezer.compiler.config import OptimizeConfig
from squeezer.compiler.decoder_graph import OPSET, DecoderWeights, build_decoder, unsupported_reason
from squeezer.compiler.gate import gate_candidate
from squeezer.compiler.generation_gate import NEW_TOKENS, GenerationGate
from squeezer.compiler.package import package_files
from squeezer.compiler.pipeline import Pipeline, Progress
from squeezer.compiler.recipes import Recipe, recipes_for
from squeezer.compiler.select import Planned, choose, plan, record_timings
from squeezer.config import ModelConfig
from squeezer.hardware import hardware_fingerprint
from squeezer.sources import ModelSource
from squeezer.tasks import ModelInfo

if TYPE_CHECKING:
    from squeezer.backends.torch_decoder import TorchDecoder

HEAD = "causal-lm"
GRAPH = "decoder.onnx"
MAX_SEQUENCES = 16  # how many prompts the gate decodes together (the serving default)


class UnsupportedModelError(ValueError):
    """The decoder graph cannot express this model; the message says why."""


def decoder_examples(src: ModelSource, info: ModelInfo, task: str, config: OptimizeConfig) -> list[vd.Example]:
    """The prompts (built-in, or one a line from --validation-data); refuses a model it cannot compile."""
    reason = unsupported_reason(info.config)
    if reason:
        raise UnsupportedModelError(f"{src.model_id} cannot be compiled for {task}: {reason}")
    return vd.from_file(config.validation_data, task) if config.validation_data else gd.builtin()


def decoder_target(target: str) -> str:
    """Compiled decoders run on ONNX Runtime's CPU kernels (MatMulNBits, GroupQueryAttention) for now."""
    if target == "cuda":
        raise ValueError("--target cuda: compiled decoders run on the CPU for now; use --target cpu or auto")
    return "cpu"


def reference_decoder(src: ModelSource, config: OptimizeConfig) -> TorchDecoder:
    """The float32 torch decoder, as `squeezer serve` runs the model without an artifact."""
    from squeezer.backends.torch_decoder import TorchDecoder  # lazy: torch is an optional extra

    model_config = ModelConfig(task="text-generation", allow_pickle=config.allow_pickle,
                               trust_remote_code=config.trust_remote_code)
    return TorchDecoder.load(src, model_config, config.threads, MAX_SEQUENCES)


def compile_decoder(src: ModelSource, info: ModelInfo, task: str, target: str, examples: list[vd.Example],
                    config: OptimizeConfig, tmp: Path, say: Progress) -> dict[str, Any]:
    """Build, gate and time every decoder recipe; move the winner into `tmp`; returns the report data."""
    scratch = tmp / ".work"
    scratch.mkdir()
    decoders: dict[str, Decoder] = {}
    reference = None
    try:
        say(f"loading {src.model_id} in float32 (the reference)")
        reference = reference_decoder(src, config)
        prompts = gd.encode(info.tokenizer, examples, reference.max_length - NEW_TOKENS - 1)
        say(f"running the PyTorch reference on {len(prompts)} prompts ({NEW_TOKENS} tokens each)")
        gate = GenerationGate(reference, prompts, NEW_TOKENS, config.max_accuracy_loss)
        calibration = gd.encode(info.tokenizer, [vd.Example(t) for t in vd.calibration_texts()],
                                reference.max_length)
        recipes = recipes_for(target, config.sweep, config.recipe_names(), "decoder")
        candidates, runnable = plan(recipes, hardware_fingerprint()["cpu"]["flags"], say)
        built = build_all(runnable, reference.model, calibration, scratch)
        for i, recipe, step_say in runnable:
            record, decoder = evaluate(recipe, built[recipe.name], gate, scratch / recipe.name, config.threads, step_say)
            candidates[i] = record
            if decoder is not None:
                decoders[recipe.name] = decoder
        ref_timing = time_all(decoders, reference, candidates, info, config, say)
        chosen = choose(candidates)
        say(f"chosen: {chosen['name']} ({chosen.get('speedup', '?')}x the PyTorch reference)")
        for decoder in decoders.values():  # sessions hold their files open; close them before the move
            decoder.close()
        decoders.clear()
        for file in (scratch / chosen["folder"]).iterdir():
            os.replace(file, tmp / file.name)
        package_files(src, info, tmp)
        return report_data(src, task, target, config, gate, examples, candidates, chosen, ref_timing)
    finally:
        for decoder in decoders.values():
            decoder.close()
        if reference is not None:
            reference.close()
        shutil.rmtree(scratch, ignore_errors=True)


Built = tuple[float, Exception | None]  # a candidate's build: its seconds, and the error it failed with


def build_all(runnable: Planned, model: Any, calibration: list[list[int]], scratch: Path) -> dict[str, Built]:
    """Build every candidate's graph (each in its own folder) before any is loaded: a build's transients (a
    SmoothQuant copy of the model, the graph being written) then sit beside the reference alone, not beside the
    candidates loaded so far, which took SmolLM2-135M's compile peak from 4.95 to 3.31 GiB (BENCHMARKS.md).
    `calibration` (prompts disjoint from the gate's) is what a smoothing recipe measures activations on."""
    built: dict[str, Built] = {}
    for _, recipe, say in runnable:
        [weights] = [step for step in recipe.steps if isinstance(step, DecoderWeights)]
        say("building the decoder graph")
        start, error = time.perf_counter(), None
        try:
            build_decoder(model, scratch / recipe.name, weights, calibration)
        except Exception as exc:  # reported at its gate, as the candidate's failure
            error = exc
        finally:
            heap.trim()
        built[recipe.name] = (round(time.perf_counter() - start, 2), error)
    return built


def evaluate(recipe: Recipe, built: Built, gate: GenerationGate, folder: Path, threads: int,
             say: Progress) -> tuple[dict[str, Any], Decoder | None]:
    """Load one built candidate and gate it; returns its report record, and its decoder when it passed."""
    record: dict[str, Any] = {"name": recipe.name, "dtype": recipe.dtype, "recipe": recipe.describe(), "verdict": "failed",
                              "reasons": [], "metrics": {}, "timings": {}, "requires": list(recipe.requires)}

    def load() -> OnnxDecoder:
        seconds, error = built
        if error is not None:
            raise error
        record.update(folder=folder.name, size_bytes=sum(f.stat().st_size for f in folder.iterdir()), build_s=seconds)
        decoder = OnnxDecoder.load(folder, threads, MAX_SEQUENCES, SPINNING)
        say(f"gate on {len(gate.prompts)} prompts, {gate.positions} positions")
        return decoder

    decoder = gate_candidate(record, load, gate.judge, say)
    if decoder is None:  # a float candidate of a 1B model is GBs: do not hold the disk until the sweep ends
        shutil.rmtree(folder, ignore_errors=True)
    return record, decoder


def time_all(decoders: dict[str, Decoder], reference: Decoder, candidates: list[dict[str, Any]], info: ModelInfo,
             config: OptimizeConfig, say: Progress) -> dict[str, Any]:
    """Time the passed candidates and the reference together; fill each record's timings and speedup."""
    load = decoder_timing.PROFILES[config.profile]
    say(f"timing {len(decoders)} candidates and the reference ({config.profile}: {load.sequences} sequence(s), "
        f"{decoder_timing.STEPS} steps after a {decoder_timing.PROMPT_TOKENS}-token prompt)")
    results = decoder_timing.measure({"torch": reference, **decoders}, info.tokenizer, config.profile,
                                     config.timing_rounds, progress=say)
    return record_timings(candidates, results, results["torch"].ms_per_token)


def report_data(src: ModelSource, task: str, target: str, config: OptimizeConfig, gate: GenerationGate,
                examples: list[vd.Example], candidates: list[dict[str, Any]], chosen: dict[str, Any],
                ref_timing: dict[str, Any]) -> dict[str, Any]:
    """squeezer.json's content for a decoder artifact (the format is `squeezer.artifact`'s)."""
    for c in candidates:
        c.pop("folder", None)
    return {
        "model_id": src.model_id, "task": task, "head": HEAD, "target": target, "profile": config.profile,
        "graph": {"file": GRAPH, "kind": "decoder", "inputs": ["input_ids", "seqlens_k", "total_sequence_length", "logits_index"],
                  "outputs": ["logits"], "dtype": chosen["dtype"], "recipe": chosen["name"], "opset": OPSET},
        "session": {"allow_spinning": SPINNING},
        "requires": chosen.get("requires", []),  # CPU features the chosen graph needs (any one): refused without them
        "source": {"path": str(src.path), "gguf_file": src.gguf_file},
        "hardware": hardware_fingerprint(), "versions": versions(),
        "accuracy": {"budget": gate.budget, "bounds": gate.limits,
                     "validation": {"kind": "file" if config.validation_data else "built-in", "examples": len(examples),
                                    "hash": vd.digest(examples), "new_tokens": gate.new_tokens, "positions": gate.positions}},
        "reference": {"name": "torch", "timings": ref_timing},
        "candidates": candidates, "chosen": chosen["name"],
        "settings": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("cache_dir",)},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


DECODER = Pipeline(decoder_examples, decoder_target, compile_decoder)
