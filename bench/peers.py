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
Each peer decodes `new_tokens` greedily for one chat prompt, alone, and for `batch` prompts together where
the peer can batch (genai's static batch); the numbers are tokens over wall time, prompt included, as the
squeezer single-client figure is.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def chat_prompt(tokenizer: Any, question: str) -> str:
    """The question through the model's own chat template, as the server renders it."""
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)


def llama_cpp(gguf: Path, prompt: str, new_tokens: int, threads: int) -> dict[str, float] | str:
    """Tokens/s of llama.cpp decoding one request; a string says why it was skipped."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return "skipped: pip install llama-cpp-python"
    llm = Llama(model_path=str(gguf), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
    llm(prompt, max_tokens=4, temperature=0.0)  # warm-up
    start = time.perf_counter()
    out = llm(prompt, max_tokens=new_tokens, temperature=0.0, top_k=1)
    wall = time.perf_counter() - start
    return {"tokens_per_s": out["usage"]["completion_tokens"] / wall}


def onnxruntime_genai(model_dir: Path | None, prompt: str, new_tokens: int, batch: int) -> dict[str, float] | str:
    """Tokens/s of onnxruntime-genai for one request and for `batch` requests in one static batch."""
    if model_dir is None:
        return "skipped: pass --genai-model (see bench/peers.py for how to build one)"
    try:
        import onnxruntime_genai as og
    except ImportError:
        return "skipped: pip install onnxruntime-genai"
    model = og.Model(str(model_dir))
    tokenizer = og.Tokenizer(model)
    ids = tokenizer.encode(prompt)

    def run(rows: int) -> float:
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

    run(1)  # warm-up
    return {"tokens_per_s": run(1), "batched_tokens_per_s": run(batch)}
