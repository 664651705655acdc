"""Serving a compiled causal LM: `squeezer serve DIR` and `serve model.gguf --optimize` through the decode loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from squeezer.hardware import INT8_DOT_UNITS, hardware_fingerprint
from squeezer.testing.server import ServerProcess, metric
from squeezer.testing.tiny_decoders import reference_generate

PROMPT = "Hello there, how are"
CHAT = [{"role": "user", "content": "Say something nice."}]


def cli_optimize(source: str, out, *flags: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "squeezer.cli", "optimize", source, "--out", str(out), *flags]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def artifact(tiny_decoder_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("decoder-art") / "llama"
    done = cli_optimize(str(tiny_decoder_path("llama")), out, "--recipes", "decoder-fp32", "--no-cache", "--timing-rounds", "3")
    assert "chosen: decoder-fp32" in done.stdout and "top1_agreement" in done.stdout
    return out


@pytest.fixture(scope="module")
def reference(tiny_decoder_path):
    """Greedy text of transformers' generate on the source model, for a plain prompt or a chat."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_decoder_path("llama")
    model, tok = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)

    def run(n: int, prompt: str | None = None, messages: list | None = None) -> str:
        ids = tok.apply_chat_template(messages, add_generation_prompt=True) if messages else tok(prompt, add_special_tokens=False)["input_ids"]
        return tok.decode(reference_generate(model, list(ids), n), skip_special_tokens=True)

    return run


def test_served_artifact_generates_what_torch_generates(artifact, reference, tmp_path) -> None:
    from openai import OpenAI

    srv = ServerProcess([f"m={artifact}"], tmp_path)
    try:
        srv.wait_ready()
        info = httpx.get(srv.url + "/info").json()["models"][0]
        assert info["state"] == "ready", srv.logs()
        assert info["backend"] == "onnxruntime" and info["dtype"] == "float32" and info["task"] == "text-generation"
        assert info["memory_bytes"] >= (artifact / "decoder.onnx.data").stat().st_size  # the weights beside the graph
        client = OpenAI(base_url=srv.url + "/v1", api_key="unused")
        chat = client.chat.completions.create(model="m", messages=CHAT, max_tokens=10, temperature=0)
        streamed = list(client.chat.completions.create(model="m", messages=CHAT, max_tokens=10, temperature=0, stream=True,
                                                       stream_options={"include_usage": True}))
        streamed_text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        body = {"model": "m", "inputs": PROMPT, "parameters": {"max_new_tokens": 10, "details": True}}
        generated = httpx.post(srv.url + "/generate", json=body, timeout=60).json()
        many = [httpx.post(srv.url + "/models/m", json={"inputs": p, "parameters": {"max_new_tokens": 6}}, timeout=60).json()
                for p in (PROMPT, "Another one")]
        metrics = httpx.get(srv.url + "/metrics").text
    finally:
        srv.stop()
    # the chat asked twice, and PROMPT after /generate, begin as cached sequences did: the prefix cache served them
    assert metric(metrics, "squeezer_cache_hits_total", cache="prefix") >= 2
    assert metric(metrics, "squeezer_prefix_cache_tokens_total") > len(CHAT[0]["content"].split())
    assert chat.choices[0].message.content == reference(10, messages=CHAT) == streamed_text
    # the first chat prefilled its whole prompt; the same chat again took all but its last token from the cache
    assert chat.usage.prompt_tokens_details.cached_tokens == 0
    again = streamed[-1].usage
    assert again.prompt_tokens == chat.usage.prompt_tokens and again.prompt_tokens_details.cached_tokens == again.prompt_tokens - 1
    assert generated["generated_text"] == reference(10, prompt=PROMPT)
    assert generated["details"]["generated_tokens"] <= 10
    assert many == [[{"generated_text": reference(6, prompt=p)}] for p in (PROMPT, "Another one")]


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a full decoder compile: about 150 s on 2 idle cores, 270 s on busy ones
def test_smollm2_gguf_optimize_then_serve_optimize(tmp_path, smollm2_file) -> None:
    """The real model, compiled for batches: optimize picks a passing quantized candidate, and where the CPU has
    int8 dot-product units the int8-activation candidate passes the default gate (it failed it on an Intel Xeon
    before the lm head's rows were scaled one by one); `serve x.gguf --optimize --optimize-profile throughput`
    then serves the choice (from the cache the optimize run filled, as the same settings make the same key)."""
    folder, name = smollm2_file
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    out = tmp_path / "smollm"
    done = cli_optimize(f"smollm={folder / name}", out, "--profile", "throughput", env=env, timeout=3000)
    report = json.loads((out / "squeezer.json").read_text())
    verdicts = {c["name"]: c["verdict"] for c in report["candidates"]}
    chosen = next(c for c in report["candidates"] if c["name"] == report["chosen"])
    assert chosen["dtype"] in ("int8", "int4"), done.stdout
    assert chosen["metrics"]["top1_agreement"] >= 0.9, done.stdout
    vnni = set(INT8_DOT_UNITS[0]) & set(hardware_fingerprint()["cpu"]["flags"])
    assert verdicts["decoder-w8a8-smooth"] in (("chosen", "passed", "screened") if vnni else ("skipped",)), done.stdout
    assert {"tokenizer.json", "config.json", "decoder.json"} <= {p.name for p in out.iterdir()}

    srv = ServerProcess([f"smollm={folder / name}", "--optimize", "--optimize-profile", "throughput"], tmp_path, env=env)
    try:
        srv.wait_ready(900)
        info = httpx.get(srv.url + "/info").json()["models"][0]
        assert info["state"] == "ready" and info["backend"] == "onnxruntime", srv.logs()
        assert info["dtype"] == chosen["dtype"] and info["chat_template"]
        body = {"model": "smollm", "messages": CHAT, "max_tokens": 16, "temperature": 0}
        answer = httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=120).json()
    finally:
        srv.stop()
    assert answer["choices"][0]["message"]["content"] == local_greedy(out, CHAT, 16)


def local_greedy(artifact, messages: list, n: int) -> str:
    """The artifact's greedy answer, decoded in this process (the gate's decoding, without the server)."""
    from squeezer.compiler.generation_gate import greedy
    from squeezer.config import ServeConfig
    from squeezer.generation.chat import chat_prompt_ids
    from squeezer.runtime import load_runtime
    from squeezer.sources import ModelSource

    model = load_runtime(ModelSource("m", artifact, artifact=True), ServeConfig())
    try:
        tokenizer = model.info.tokenizer
        [tokens] = greedy(model.decoder, [chat_prompt_ids(tokenizer, messages)], n)
        return tokenizer.decode(tokens, skip_special_tokens=True)
    finally:
        model.close()
