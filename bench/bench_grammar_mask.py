"""The cost of structured output's token mask: SmolLM2's tokenizer (49k tokens) and a JSON schema, one mask per
token of a real answer. `.venv/bin/python -m bench.bench_grammar_mask` (fetches SmolLM2's GGUF once)."""

import json
import time

import numpy as np
from transformers import AutoTokenizer

from squeezer.generation.grammar import Grammars
from squeezer.testing.tiny_decoders import smollm2_gguf

folder, name = smollm2_gguf()
tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=name)
schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["name", "age", "tags"], "additionalProperties": False}
g = Grammars(tok, [tok.eos_token_id])
t = time.perf_counter(); g.check({"type": "json", "value": schema}); print("tokenizer+compile s", round(time.perf_counter() - t, 3))
t = time.perf_counter(); g.check({"type": "json", "value": {**schema, "title": "x"}}); print("compile s", round(time.perf_counter() - t, 4))
target = json.dumps({"name": "Ada Lovelace", "age": 36, "tags": ["math", "engines", "poetry"]}, separators=(",", ":"))
ids = tok(target, add_special_tokens=False)["input_ids"]
vocab = 49152
rng = np.random.default_rng(0)
c = g.constraint({"type": "json", "value": schema})
times = []
for tid in ids:
    row = rng.standard_normal((1, vocab)).astype(np.float32)
    t = time.perf_counter(); c.mask(row); times.append(time.perf_counter() - t)
    c.advance(tid)
print(f"mask per token: median {np.median(times)*1e3:.3f} ms, max {max(times)*1e3:.3f} ms over {len(ids)} tokens")
