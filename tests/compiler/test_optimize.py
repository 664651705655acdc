"""optimize(): the artifact and its report, the cache, atomic output, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from squeezer.artifact import FORMAT_VERSION, load_artifact
from squeezer.cli import main
from squeezer.compiler import cache as cache_module
from squeezer.compiler.config import OptimizeConfig
from squeezer.compiler.gate import Gate
from squeezer.config import ConfigError
from tests.compiler.artifacts import build_artifact


def test_artifact_holds_graph_tokenizer_configs_and_report(tiny_artifact) -> None:
    report = tiny_artifact("bert", "base")
    files = {p.name for p in report.path.iterdir()}
    assert {"model.onnx", "squeezer.json", "config.json", "tokenizer.json", "vocab.txt"} <= files
    assert not any(p.suffix == ".safetensors" or p.name.startswith(".") for p in report.path.iterdir())
    data = load_artifact(report.path).report
    assert data["format_version"] == FORMAT_VERSION and data["task"] == "feature-extraction" and data["head"] == "base"
    assert data["graph"]["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert data["hardware"]["cpu"]["available_cpus"] >= 1 and "flags" in data["hardware"]["cpu"]
    assert {"onnxruntime", "onnx", "transformers", "torch", "python"} <= set(data["versions"])
    assert len(data["source"]["content_hash"]) == 64


def test_report_lists_every_candidate_and_the_fastest_passing_one_wins(tiny_artifact) -> None:
    report = tiny_artifact("bert", "base")
    names = [c["name"] for c in report.candidates]
    assert names == ["fp32", "fp32-fused", "int8-dyn-u8-pc"]
    for c in report.candidates:
        assert c["verdict"] in ("chosen", "passed", "rejected", "failed")
        assert set(c["metrics"]) == {"min_cosine", "mean_cosine", "token_min_cosine"}  # token embeddings are served
        assert c["size_bytes"] > 0 and c["recipe"]["steps"] is not None
        if c["verdict"] in ("chosen", "passed"):
            assert {"short_ms", "long_ms", "score"} <= set(c["timings"]) and c["speedup"] > 0
    timed = [c for c in report.candidates if c["verdict"] in ("chosen", "passed")]
    assert report.chosen["timings"]["score"] == min(c["timings"]["score"] for c in timed)
    assert report.data["reference"]["timings"]["short_ms"] > 0
    table = report.table()
    for expected in ("candidate", "min_cosine", "short_ms", "vs torch", "torch (reference)", "* chosen", "hardware:", "cores"):
        assert expected in table


def test_throughput_profile_times_batches(tiny_model, tmp_path: Path) -> None:
    report = build_artifact(tiny_model("distilbert", "sequence-classification"), tmp_path / "out", "sequence-classification",
                            profile="throughput", recipes="fp32")
    assert set(report.chosen["timings"]) == {"b16x32_ms", "b16x64_ms", "b8x128_ms", "score", "unit"}
    assert report.chosen["timings"]["unit"] == "ms/sequence"
    assert load_artifact(report.path).report["session"]["allow_spinning"] is False


def test_second_run_is_served_from_the_cache(tiny_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, cache = tiny_model("bert", "sequence-classification"), str(tmp_path / "cache")
    first = build_artifact(folder, tmp_path / "a", "sequence-classification", cache=True, cache_dir=cache)
    start = time.perf_counter()
    second = build_artifact(folder, tmp_path / "b", "sequence-classification", cache=True, cache_dir=cache)
    assert time.perf_counter() - start < 3.0
    assert not first.cached and second.cached and "(from cache)" in second.table()
    assert second.data["candidates"] == first.data["candidates"]
    assert load_artifact(second.path).report["files"] == load_artifact(first.path).report["files"]
    other = build_artifact(folder, tmp_path / "c", "sequence-classification", cache=True, cache_dir=cache,
                           max_accuracy_loss=0.5)
    assert not other.cached  # a different budget is a different result
    monkeypatch.setattr(cache_module, "code_hash", lambda: "another squeezer")
    changed = build_artifact(folder, tmp_path / "d", "sequence-classification", cache=True, cache_dir=cache)
    assert not changed.cached  # squeezer's own code changed: its artifacts may differ


def test_code_hash_follows_every_source_file(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "x.py").write_text("x = 1\n")
        (tmp_path / name / "sub" / "y.py").write_text("y = 2\n")
    assert cache_module.code_hash(tmp_path / "a") == cache_module.code_hash(tmp_path / "b")
    (tmp_path / "b" / "sub" / "y.py").write_text("y = 3\n")
    assert cache_module.code_hash(tmp_path / "a") != cache_module.code_hash(tmp_path / "b")


def test_interrupted_optimize_leaves_nothing_behind(tiny_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def interrupted(self, backend):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, backend)

    original = Gate.judge
    monkeypatch.setattr(Gate, "judge", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_artifact(tiny_model("bert", "base"), tmp_path / "out", "base")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_rebuild_keeps_the_previous_artifact(tiny_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    build_artifact(tiny_model("bert", "base"), out, "base", recipes="fp32")
    before = (out / "squeezer.json").read_text()
    monkeypatch.setattr(Gate, "judge", lambda self, backend: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        build_artifact(tiny_model("bert", "base"), out, "base", recipes="fp32")
    assert (out / "squeezer.json").read_text() == before and [p.name for p in tmp_path.iterdir()] == ["out"]
    monkeypatch.undo()
    rebuilt = build_artifact(tiny_model("bert", "base"), out, "base", recipes="fp32-fused")  # a finished run replaces it
    assert rebuilt.data["chosen"] == "fp32-fused" and [p.name for p in tmp_path.iterdir()] == ["out"]


def optimize_cmd(model: Path, out: Path, recipes: str) -> list[str]:
    return [sys.executable, "-m", "squeezer.cli", "optimize", str(model), "--out", str(out), "--no-cache", "--recipes", recipes]


def interrupt_cli(cmd: list[str], progress: str, interrupt: Callable[[subprocess.Popen[str]], None]) -> subprocess.Popen[str]:
    """Run an optimize command and `interrupt` it as soon as its progress shows `progress`."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    assert proc.stderr is not None
    for line in proc.stderr:
        if progress in line:
            interrupt(proc)
            break
    return proc


def test_sigterm_during_cli_optimize_leaves_no_artifact(tiny_model, tmp_path: Path) -> None:
    cmd = optimize_cmd(tiny_model("bert", "base"), tmp_path / "out", "fp32,fp32-fused,int8-dyn-s8-pc-keep33,int8-static-qdq-pc")
    proc = interrupt_cli(cmd, "[2/4]", lambda p: p.send_signal(signal.SIGTERM))
    assert proc.stderr is not None
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, rest
    assert "interrupted; nothing was written" in rest
    assert list(tmp_path.iterdir()) == []


def test_a_killed_run_leaves_nothing_after_the_next_one(tiny_model, tmp_path: Path) -> None:
    """SIGKILL cannot be caught: its staging folder stays until the next optimize into the same folder."""
    model, out = tiny_model("bert", "base"), tmp_path / "out"
    proc = interrupt_cli(optimize_cmd(model, out, "fp32,fp32-fused"), "[1/2]", lambda p: p.kill())
    proc.wait(timeout=60)
    left = [p.name for p in tmp_path.iterdir()]
    assert left and all(name.startswith(f".out.partial-{proc.pid}-") for name in left)
    alive = tmp_path / f".out.partial-{os.getpid()}-x"  # a running optimize's staging folder is left alone
    alive.mkdir()
    subprocess.run(optimize_cmd(model, out, "fp32"), check=True, capture_output=True, cwd=Path(__file__).parents[2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, "out"])


def test_a_full_disk_while_optimizing_is_a_clear_error_and_leaves_nothing(tiny_model, tmp_path: Path) -> None:
    """Writes fail part-way (a file-size limit stands in for a full disk: the same failed write, EFBIG for
    ENOSPC): the command says what failed, exits non-zero without a traceback, and leaves no folder behind."""
    import resource

    def small_files() -> None:  # in the child: files past 200 kB cannot be written, and that is an error, not a kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    out = tmp_path / "out"
    done = subprocess.run(optimize_cmd(tiny_model("bert", "base"), out, "fp32"), capture_output=True, text=True,
                          timeout=300, preexec_fn=small_files, cwd=Path(__file__).parents[2])
    assert done.returncode in (1, 2), done.stderr[-2000:]  # 2 when the export step reports it, 1 for a plain write
    assert "squeezer optimize: error:" in done.stderr and "File too large" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_destination_checks(tiny_model, tmp_path: Path, tiny_artifact) -> None:
    folder = tiny_model("bert", "base")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="non-empty folder that is not a squeezer artifact"):
        build_artifact(folder, occupied, "base")
    with pytest.raises(ValueError, match="must not be the source folder or inside it"):
        build_artifact(folder, folder / "out", "base")
    with pytest.raises(ValueError, match="already a squeezer artifact"):
        build_artifact(tiny_artifact("bert", "base").path, tmp_path / "again", "base")
    assert (occupied / "notes.txt").read_text() == "mine"


def test_cli_prints_progress_and_the_table(tiny_model, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["optimize", str(tiny_model("roberta", "token-classification")), "--out", str(out), "--task",
                 "token-classification", "--recipes", "fp32,int8-dyn-u8-pc", "--no-cache", "--timing-rounds", "3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "[1/2] fp32: gate on" in captured.err and "[2/2] int8-dyn-u8-pc:" in captured.err
    assert "timing round 3/3" in captured.err
    assert "entity_agreement" in captured.out and "chosen:" in captured.out and f"artifact: {out}" in captured.out
    assert json.loads((out / "squeezer.json").read_text())["task"] == "token-classification"


def test_cli_errors_name_the_flag(tiny_model, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = str(tiny_model("bert", "base"))
    assert main(["optimize", folder, "--out", str(tmp_path / "o"), "--max-accuracy-loss", "2"]) == 2
    assert "--max-accuracy-loss (SQUEEZER_MAX_ACCURACY_LOSS): must be between 0 and 1" in capsys.readouterr().err
    assert main(["optimize", folder, "--out", str(tmp_path / "o"), "--recipes", "fp32,nope"]) == 2
    assert "--recipes (SQUEEZER_RECIPES): unknown recipes nope" in capsys.readouterr().err
    assert main(["optimize", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from squeezer.config import from_sources

    monkeypatch.setenv("SQUEEZER_PROFILE", "throughput")
    monkeypatch.setenv("SQUEEZER_MAX_ACCURACY_LOSS", "0.05")
    config = from_sources(OptimizeConfig, {"target": "cpu"})
    assert (config.profile, config.max_accuracy_loss, config.target) == ("throughput", 0.05, "cpu")
    with pytest.raises(ConfigError, match="--profile"):
        OptimizeConfig(profile="fast")
    with pytest.raises(ConfigError, match="--timing-rounds"):
        OptimizeConfig(timing_rounds=1)


def test_cuda_target_without_a_gpu_is_refused(tiny_model, tmp_path: Path) -> None:
    from tests.compiler.artifacts import has_cuda

    if has_cuda():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="--target cuda needs an NVIDIA GPU and onnxruntime-gpu"):
        build_artifact(tiny_model("bert", "base"), tmp_path / "out", "base", target="cuda")
    assert os.listdir(tmp_path) == []


def test_only_the_finalists_stay_loaded_for_the_final_timing(tiny_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every passed candidate is timed once as it passes; past the finalists (here 1, plus each runtime's fastest)
    it is freed at once and reported as screened, with its first timing, speed-up and why."""
    from squeezer.compiler import optimize as optimize_module

    open_now, most_open = set(), [0]

    def counted(load: Callable) -> Callable:
        def build(candidate):
            backend = load(candidate)
            close = backend.close
            open_now.add(id(backend))
            most_open[0] = max(most_open[0], len(open_now))

            def closing() -> None:
                open_now.discard(id(backend))
                close()
            backend.close = closing
            return backend
        return build

    for runtime, load in list(optimize_module.CANDIDATE_BACKENDS.items()):
        monkeypatch.setitem(optimize_module.CANDIDATE_BACKENDS, runtime, counted(load))
    report = build_artifact(tiny_model("bert", "base"), tmp_path / "out", "base", finalists=1, max_accuracy_loss=0.5,
                            recipes="fp32,fp32-fused,int8-dyn-u8-pc,ov-fp32")
    by_verdict: dict[str, list[dict]] = {}
    for c in report.candidates:
        assert c["verdict"] in ("chosen", "passed", "screened"), c  # every one passed the loose gate
        assert c["screen"]["score"] > 0
        by_verdict.setdefault(c["verdict"], []).append(c)
    screened, final = by_verdict["screened"], by_verdict.get("passed", []) + by_verdict["chosen"]
    assert sorted(c["runtime"] for c in final) == ["onnxruntime", "openvino"]  # the fastest, and each runtime's fastest
    assert len(screened) == 2 and {c["runtime"] for c in screened} == {"onnxruntime"}
    kept_ort = next(c for c in final if c["runtime"] == "onnxruntime")
    for c in screened:
        assert not c["timings"] and "speedup" not in c and c["screen_speedup"] > 0 and "first timing" in c["reasons"][0]
        assert c["screen"]["score"] >= kept_ort["screen"]["score"]
    assert all(c["timings"]["score"] > 0 for c in final)
    assert most_open[0] <= 3 and not open_now  # never all four at once; every one freed at the end
    assert "screened" in report.table()


def test_every_candidate_is_built_before_any_is_loaded(tiny_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A build's transient copies must never sit beside loaded candidates: all graphs first, then the gates."""
    from squeezer.compiler import build
    from squeezer.compiler import optimize as optimize_module

    events: list[str] = []

    def logged(kind: str, fn: Callable) -> Callable:
        def run(*args: object) -> object:
            events.append(kind)
            return fn(*args)
        return run

    for step, fn in list(build.BUILDERS.items()):
        monkeypatch.setitem(build.BUILDERS, step, logged("build", fn))
    for runtime, load in list(optimize_module.CANDIDATE_BACKENDS.items()):
        monkeypatch.setitem(optimize_module.CANDIDATE_BACKENDS, runtime, logged("load", load))
    report = build_artifact(tiny_model("bert", "base"), tmp_path / "out", "base", max_accuracy_loss=0.5,
                            recipes="fp32-fused,int8-dyn-u8-pc,ov-fp32,fp32-fused-fast-gelu")
    assert events.count("build") == 4 and events.count("load") == 4  # fuse, int8, IR, GELU; one load each
    assert events.index("load") > max(i for i, e in enumerate(events) if e == "build")
    assert all(c["build_s"] >= 0 for c in report.candidates) and report.candidate("int8-dyn-u8-pc")["build_s"] > 0
