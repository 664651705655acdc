"""The other fast CPU decoders, measured on the same prompt in the same run: llama.cpp and onnxruntime-genai.

Both are optional and not squeezer dependencies; a peer that is not installed is reported as skipped, with
how to get it:
- llama.cpp through llama-cpp-python (`pip install llama-cpp-python`, which compiles llama.cpp), on the same
  GGUF file squeezer serves, with the same thread count.
- onnxruntime-genai with an int4 model from its own builder. The builder needs transformers 5 (squeezer holds
  4.57, see README), so build the model once in a separate environment:
      python -m venv /tmp/genai-venv && /tmp/genai-venv/bin/pip install torch==2.13.0 'transformers>=5' onnx onnx_ir onnxruntime-genai
      /tmp/genai-venv/bin/python -m onnxruntime_genai.models.builder -m HF_FOLDER -i HF_FOLDER -o GENAI_DIR -p int4 -e cpu
  (HF_FOLDER: the GGUF dequantized by transformers 4.57's save_pretrained), then `pip install onnxruntime-genai`
  here and pass `--genai-model GENAI_DIR`. Its runtime needs no transformers.
Each peer is loaded once and returns a runner; a run decodes `new_tokens` greedily for one chat prompt,
alone, and for `batch` prompts together where the peer can batch (genai's static batch). The numbers are
tokens over wall time, prompt included, as the squeezer single-client figure is. The bench calls the
runners in rounds interleaved with squeezer's, since this machine's speed drifts by ±15% over minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def chat_prompt(tokenizer: Any, question: str) -> str:
    """The question through the model's own chat template, as the server renders it."""
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)


Runner = Callable[[], dict[str, float]]


def llama_cpp(gguf: Path, prompt: str, new_tokens: int, threads: int) -> Runner | str:
    """A run of llama.cpp decoding one request (loaded and warmed up once); a string says why it was skipped.

    llama-cpp-python reuses the cached prompt of its previous call, so after the warm-up only the last
    prompt token runs; squeezer's prefix cache does the same for a prompt it has seen.
    """
    try:
        from llama_cpp import Llama
    except ImportError:
        return "skipped: pip install llama-cpp-python"
    llm = Llama(model_path=str(gguf), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
    llm(prompt, max_tokens=4, temperature=0.0)  # warm-up

    def run() -> dict[str, float]:
        start = time.perf_counter()
        out = llm(prompt, max_tokens=new_tokens, temperature=0.0, top_k=1)
        return {"tokens_per_s": out["usage"]["completion_tokens"] / (time.perf_counter() - start)}

    return run


def onnxruntime_genai(model_dir: Path | None, prompt: str, new_tokens: int, batch: int) -> Runner | str:
    """A run of onnxruntime-genai: tokens/s for one request and for `batch` requests in one static batch."""
    if model_dir is None:
        return "skipped: pass --genai-model (see bench/peers.py for how to build one)"
    try:
        import onnxruntime_genai as og
    except ImportError:
        return "skipped: pip install onnxruntime-genai"
    model = og.Model(str(model_dir))
    tokenizer = og.Tokenizer(model)
    ids = tokenizer.encode(prompt)

    def decode(rows: int) -> float:
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=len(ids) + new_tokens, min_length=len(ids) + new_tokens,
                                  batch_size=rows)
        generator = og.Generator(model, params)
        start, produced = time.perf_counter(), 0
        generator.append_tokens([list(ids)] * rows if rows > 1 else ids)
        while not generator.is_done() and produced < new_tokens:
            generator.generate_next_token()
            produced += 1
        return rows * produced / (time.perf_counter() - start)

    decode(1)  # warm-up
    return lambda: {"tokens_per_s": decode(1), "batched_tokens_per_s": decode(batch)}
