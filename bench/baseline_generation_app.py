"""The out-of-the-box generation deployment: FastAPI calling `transformers.pipeline("text-generation")`
per request, one at a time, on the GGUF in BASELINE_GGUF; BASELINE_USE_CACHE=0 is the naive version."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

_gguf = Path(os.environ["BASELINE_GGUF"])
_tok = AutoTokenizer.from_pretrained(_gguf.parent, gguf_file=_gguf.name)
_model = AutoModelForCausalLM.from_pretrained(_gguf.parent, gguf_file=_gguf.name)
_pipe = pipeline("text-generation", model=_model, tokenizer=_tok)
_use_cache = os.environ.get("BASELINE_USE_CACHE", "1") == "1"
app = FastAPI()


class Chat(BaseModel):
    messages: list[dict[str, str]]
    max_new_tokens: int = 128


@app.post("/chat")
def chat(body: Chat) -> dict:
    out = _pipe(body.messages, max_new_tokens=body.max_new_tokens, do_sample=False, use_cache=_use_cache,
                min_new_tokens=body.max_new_tokens)
    reply = out[0]["generated_text"][-1]["content"]
    return {"text": reply, "generated_tokens": len(_tok(reply, add_special_tokens=False)["input_ids"])}
