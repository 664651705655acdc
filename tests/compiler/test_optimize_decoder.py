"""optimize() on causal LMs: the decoder artifact and its report, the cache, refusals, loading the artifact."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from squeezer.artifact import load_artifact
from squeezer.cli import main
from squeezer.compiler.config import OptimizeConfig
from squeezer.compiler.optimize import optimize
from squeezer.compiler.optimize_decoder import UnsupportedModelError
from squeezer.compiler.recipes import DECODER_RECIPES, all_recipes, recipes_for
from squeezer.compiler.report import Report
from squeezer.config import DecodingConfig, ModelConfig, ServeConfig
from squeezer.hardware import hardware_fingerprint
from squeezer.sources import ModelSource

# The int8-activation candidate this CPU tries: full-range weights need VNNI or AMX, 7-bit ones stand in without.
W8A8_HERE = next(r.name for r in all_recipes() if r.name in ("decoder-w8a8-smooth", "decoder-w7a8-smooth")
                 and r.missing_features(hardware_fingerprint()["cpu"]["flags"]) is None)
RECIPES = f"decoder-fp32,decoder-int8-head8,decoder-int4-head8,{W8A8_HERE}"


def build(folder: Path, out: Path, **settings) -> Report:
    values = {"cache": False, "timing_rounds": 3, "recipes": RECIPES, **settings}
    return optimize(ModelSource(folder.name, folder), out, OptimizeConfig(**values), progress=lambda _: None)


@pytest.fixture(scope="module")
def llama_artifact(tiny_decoder_path, tmp_path_factory) -> Report:
    return build(tiny_decoder_path("llama"), tmp_path_factory.mktemp("decoder") / "artifact")


def test_artifact_is_self_contained(llama_artifact: Report) -> None:
    files = {p.name for p in llama_artifact.path.iterdir()}
    assert {"decoder.onnx", "decoder.onnx.data", "decoder.json", "squeezer.json", "config.json", "tokenizer.json",
            "tokenizer_config.json"} <= files
    assert not any(p.suffix == ".safetensors" or p.name.startswith(".") for p in llama_artifact.path.iterdir())
    data = load_artifact(llama_artifact.path).report
    assert data["task"] == "text-generation" and data["head"] == "causal-lm" and data["target"] == "cpu"
    assert data["graph"]["file"] == "decoder.onnx" and data["graph"]["dtype"] == llama_artifact.chosen["dtype"]
    assert "decoder.onnx.data" in data["files"]
    assert data["accuracy"]["validation"]["examples"] == 12 and data["accuracy"]["validation"]["positions"] > 12


def test_report_lists_candidates_with_numbers_and_verdicts(llama_artifact: Report) -> None:
    report = llama_artifact
    assert [c["name"] for c in report.candidates] == RECIPES.split(",")
    assert [c["dtype"] for c in report.candidates] == ["float32", "int8", "int4", "int8"]
    for c in report.candidates:
        assert c["verdict"] in ("chosen", "passed", "rejected")
        assert {"top1_agreement", "mean_kl", "greedy_exact", "greedy_prefix"} <= set(c["metrics"])
        assert c["size_bytes"] > 0 and c["recipe"]["steps"][0]["kind"] == "DecoderWeights"
        if c["verdict"] == "rejected":
            assert c["reasons"] and not c["timings"]
        else:
            assert {"prefill_ms", "step_ms", "score", "tokens_per_s"} <= set(c["timings"]) and c["speedup"] > 0
    fp32 = report.candidate("decoder-fp32")
    assert fp32["metrics"]["top1_agreement"] == 1.0 and fp32["metrics"]["mean_kl"] < 1e-4 and fp32["verdict"] != "rejected"
    assert report.candidate("decoder-int4-head8")["metrics"]["mean_kl"] > fp32["metrics"]["mean_kl"]
    timed = [c for c in report.candidates if c["timings"]]
    assert report.chosen["timings"]["score"] == min(c["timings"]["score"] for c in timed)
    table = report.table()
    for expected in ("top1_agreement", "mean_kl", "greedy_exact", "step_ms", "tokens_per_s", "torch (reference)", "* chosen"):
        assert expected in table


def test_artifact_loads_on_onnxruntime_and_decodes_like_torch(llama_artifact: Report, tiny_decoder_path) -> None:
    from squeezer.backends.torch_decoder import TorchDecoder
    from squeezer.compiler.generation_gate import greedy
    from squeezer.runtime import load_runtime
    from squeezer.runtime.causal_lm import CausalLMRuntime

    config = ServeConfig(decoding=DecodingConfig(max_batch_sequences=4))
    model = load_runtime(ModelSource("m", llama_artifact.path, artifact=True), config)
    try:
        assert isinstance(model, CausalLMRuntime)
        facts = model.describe()
        assert facts["backend"] == "onnxruntime" and facts["dtype"] == llama_artifact.chosen["dtype"]
        assert facts["chat_template"] and facts["max_sequences"] == 4 and facts["max_total_tokens"] == 256
        assert facts["prefix_cache_mb"] == DecodingConfig().prefix_cache_mb
        if llama_artifact.chosen["dtype"] == "float32":
            ids = model.info.tokenizer.apply_chat_template([{"role": "user", "content": "Hi there"}], add_generation_prompt=True)
            reference = TorchDecoder.load(tiny_decoder_path("llama"))
            assert greedy(model.decoder, [ids, ids[:5]], 10) == greedy(reference, [ids, ids[:5]], 10)
    finally:
        model.close()


def test_an_artifact_generates_without_torch(llama_artifact: Report) -> None:
    """Loading and greedy generation never import torch; sampling, which needs it, is refused with why."""
    code = (
        "import asyncio, sys; sys.modules['torch'] = None\n"
        "from squeezer.engine import Engine; from squeezer.errors import ClientError\n"
        "from squeezer.sources import ModelSource\n"
        "async def main():\n"
        f"    engine = Engine([ModelSource('m', __import__('pathlib').Path({str(llama_artifact.path)!r}), artifact=True)])\n"
        "    await engine.start()\n"
        "    done = await engine.generate('m', 'Hello there', parameters={'max_new_tokens': 5, 'details': True})\n"
        "    print(engine.models()[0]['backend'], done.generations[0].generated_tokens)\n"
        "    try:\n"
        "        await engine.generate('m', 'Hello', parameters={'max_new_tokens': 5, 'do_sample': True})\n"
        "    except ClientError as exc:\n"
        "        print(exc.status, 'torch' in str(exc))\n"
        "    await engine.close()\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["onnxruntime", "5", "422", "True"]


def test_second_run_is_served_from_the_cache(tiny_decoder_path, tmp_path: Path) -> None:
    folder, cache = tiny_decoder_path("llama"), str(tmp_path / "cache")
    first = build(folder, tmp_path / "a", recipes="decoder-fp32", cache=True, cache_dir=cache)
    start = time.perf_counter()
    second = build(folder, tmp_path / "b", recipes="decoder-fp32", cache=True, cache_dir=cache)
    assert time.perf_counter() - start < 5.0
    assert not first.cached and second.cached and "(from cache)" in second.table()
    assert second.data["candidates"] == first.data["candidates"]
    assert load_artifact(second.path).report["files"] == load_artifact(first.path).report["files"]


def test_throughput_profile_times_eight_sequences_stepping_together(tiny_decoder_path, tmp_path: Path) -> None:
    report = build(tiny_decoder_path("llama"), tmp_path / "out", recipes="decoder-fp32", profile="throughput")
    timings = report.chosen["timings"]
    assert timings["unit"] == "ms/token" and timings["score"] == pytest.approx(timings["step_ms"] / 8, rel=0.01)
    assert report.data["reference"]["timings"]["tokens_per_s"] > 0


def test_unsupported_architecture_is_refused_with_the_reason(tiny_decoder_path, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="cannot be compiled for text-generation: .*'gpt2'"):
        build(tiny_decoder_path("gpt2"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_names_why_a_model_cannot_be_compiled(tiny_decoder_path, tmp_path: Path, capsys) -> None:
    code = main(["optimize", str(tiny_decoder_path("gpt2")), "--out", str(tmp_path / "out"), "--no-cache"])
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot be compiled for text-generation" in err and "gpt2" in err


def test_serve_optimize_keeps_an_unsupported_model_on_torch(tiny_decoder_path, tmp_path: Path, monkeypatch) -> None:
    from squeezer.compiler.serving import optimizer
    from squeezer.runtime import load_runtime

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    config = ServeConfig(model=ModelConfig(optimize=True))
    model = load_runtime(ModelSource("g", tiny_decoder_path("gpt2")), config, prepare=optimizer(config.model))
    try:
        assert model.describe()["backend"] == "torch"
    finally:
        model.close()


def test_serve_optimize_compiles_for_the_profile_asked(tiny_decoder_path, tmp_path: Path, monkeypatch) -> None:
    from squeezer.compiler.serving import optimized_source

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    source = ModelSource("l", tiny_decoder_path("llama"))
    profiles = {p: optimized_source(source, ModelConfig(optimize=True, optimize_profile=p)).path for p in ("throughput", "latency")}
    assert profiles["throughput"] != profiles["latency"]
    for profile, path in profiles.items():
        report = load_artifact(path).report
        assert report["profile"] == profile
        assert W8A8_HERE in [c["name"] for c in report["candidates"] if c["verdict"] != "skipped"]


def test_encoder_recipes_are_refused_for_a_decoder(tiny_decoder_path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fp32 cannot build a decoder model"):
        build(tiny_decoder_path("llama"), tmp_path / "out", recipes="fp32")
    assert [r.name for r in recipes_for("cpu", "default", family="decoder")] == [
        "decoder-fp32", "decoder-int8-head8", "decoder-int4-head8", "decoder-int4-head8-folded", "decoder-w8a8-smooth",
        "decoder-w7a8-smooth"]  # the last two: each tried only where the other is not
    assert len(recipes_for("cpu", "full", family="decoder")) == len(DECODER_RECIPES)
    assert OptimizeConfig(task="text-generation", recipes="decoder-int4").recipe_names() == ["decoder-int4"]


def test_every_candidate_is_built_before_any_is_loaded(tiny_decoder_path, tmp_path: Path, monkeypatch) -> None:
    """A build's transients (a SmoothQuant copy of the model) must never sit beside loaded candidates; a build that
    fails is reported as that candidate's failure, at its gate, and the sweep goes on."""
    from squeezer.compiler import optimize_decoder

    events: list[str] = []
    build_decoder, load = optimize_decoder.build_decoder, optimize_decoder.OnnxDecoder.load

    def building(model, folder: Path, weights, calibration):
        events.append(f"build {folder.name}")
        if folder.name == "decoder-int8-head8":
            raise RuntimeError("the int8 writer crashed")
        return build_decoder(model, folder, weights, calibration)

    def loading(folder: Path, *args):
        events.append(f"load {folder.name}")
        return load(folder, *args)

    monkeypatch.setattr(optimize_decoder, "build_decoder", building)
    monkeypatch.setattr(optimize_decoder.OnnxDecoder, "load", staticmethod(loading))
    report = build(tiny_decoder_path("llama"), tmp_path / "out", recipes="decoder-fp32,decoder-int8-head8,decoder-int4-head8")
    assert events == ["build decoder-fp32", "build decoder-int8-head8", "build decoder-int4-head8",
                      "load decoder-fp32", "load decoder-int4-head8"]
    crashed = report.candidate("decoder-int8-head8")
    assert crashed["verdict"] == "failed" and crashed["reasons"] == ["RuntimeError: the int8 writer crashed"]
    assert report.candidate("decoder-int4-head8")["build_s"] > 0
    assert not (tmp_path / "out" / ".work").exists()
