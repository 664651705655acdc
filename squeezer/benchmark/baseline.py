"""The out-of-the-box deployment the benchmark compares against: FastAPI calling the model per request.

SentenceTransformer.encode for sentence-transformers folders; transformers' `generate` (what the text-generation
pipeline calls) for causal LMs, on an OpenAI-shaped chat route, with its KV cache or, with BASELINE_NO_CACHE=1,
without it (the naive rung); else a transformers pipeline. Run with `uvicorn squeezer.benchmark.baseline:app`,
BASELINE_MODEL=<folder> and, for a GGUF file, BASELINE_GGUF=<file name> (what `squeezer bench` calls rung (a)).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()
_folder = Path(os.environ["BASELINE_MODEL"])
_task = os.environ.get("BASELINE_TASK", "feature-extraction")
if _task == "text-generation":
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _gguf = os.environ.get("BASELINE_GGUF") or None
    _tokenizer = AutoTokenizer.from_pretrained(str(_folder), gguf_file=_gguf)
    _lm = AutoModelForCausalLM.from_pretrained(str(_folder), gguf_file=_gguf)
    _use_cache = os.environ.get("BASELINE_NO_CACHE") != "1"

    @app.post("/v1/chat/completions")
    def chat(body: dict[str, Any]) -> dict[str, Any]:
        """Greedy, whole answer at once: the chat template, generate, decode (no batching across requests)."""
        prompt = _tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)
        ids = prompt["input_ids"]
        out = _lm.generate(ids, attention_mask=prompt["attention_mask"], max_new_tokens=body.get("max_tokens", 128),
                           do_sample=False, use_cache=_use_cache)
        new = out[0, ids.shape[1]:]
        text = _tokenizer.decode(new, skip_special_tokens=True)
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": ids.shape[1], "completion_tokens": len(new)}}
elif (_folder / "modules.json").is_file():
    from sentence_transformers import SentenceTransformer

    _model = SentenceTransformer(str(_folder), device="cpu")

    def _run(text: str | list[str]) -> list:
        return _model.encode(text).tolist()
else:
    from transformers import pipeline

    _pipe = pipeline(_task, model=str(_folder))

    def _run(text: str | list[str]) -> list:
        return _pipe(text)


class Body(BaseModel):
    inputs: str | list[str]
    options: dict = {}


if _task != "text-generation":

    @app.post("/models/{model_id:path}")
    def infer(model_id: str, body: Body) -> list:
        return _run(body.inputs)
