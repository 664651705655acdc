"""Decode throughput of the generation core (DecodeLoop + TorchDecoder) on SmolLM2-135M-Instruct, no HTTP.

    .venv/bin/python -m bench.bench_decode_core [--new-tokens 128] [--concurrent 16] [--threads 0]

Measures, in one run on this machine (float32, GGUF weights dequantized by transformers):
1. transformers `generate` for one chat prompt: the out-of-the-box reference;
2. one request alone through the loop;
3. `--concurrent` different chat prompts at once (continuous batching): aggregate and per-sequence tokens/s.
A chat answer may end at its EOS token before `--new-tokens`; rates count the tokens actually generated.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from squeezer.backends.torch_decoder import TorchDecoder
from squeezer.config import DecodingConfig
from squeezer.generation.chat import chat_prompt_ids
from squeezer.generation.params import GenerationParams
from squeezer.scheduling.decoding import DecodeLoop
from squeezer.sources import ModelSource
from squeezer.testing.tiny_decoders import reference_generate, smollm2_gguf

TOPICS = [
    "a dragon who learns to code", "the history of bread", "a lighthouse keeper's last night", "how rain forms",
    "a robot that paints", "the first trip to Mars", "a cat who runs a bakery", "why the sky is blue",
    "a lost city under the sea", "the life of a honeybee", "a chess match against time", "how volcanoes work",
    "a detective in Paris", "the invention of the telescope", "a garden on the moon", "a storm at sea",
]


def prompts(tokenizer: Any, count: int) -> list[list[int]]:
    asks = [f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]}." for i in range(count)]
    return [chat_prompt_ids(tokenizer, [{"role": "user", "content": ask}]) for ask in asks]


async def through_loop(loop: DecodeLoop, batch: list[list[int]], new_tokens: int) -> tuple[int, float]:
    """(tokens generated, seconds) for every prompt of `batch` submitted at once."""
    params = GenerationParams(max_new_tokens=new_tokens)
    start = time.perf_counter()
    results = await asyncio.gather(*(loop.generate(p, params) for p in batch))
    return sum(r.generated_tokens for r in results), time.perf_counter() - start


async def main(args: argparse.Namespace) -> None:
    import transformers

    folder, name = smollm2_gguf()
    start = time.perf_counter()
    decoder = TorchDecoder.load(ModelSource("smollm2", folder, name), threads=args.threads, max_sequences=args.concurrent)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), gguf_file=name)
    print(f"loaded in {time.perf_counter() - start:.1f}s")
    batch = prompts(tokenizer, args.concurrent)
    decoder.warmup()

    start = time.perf_counter()
    made = len(reference_generate(decoder.model, batch[0], args.new_tokens))
    took = time.perf_counter() - start
    print(f"transformers generate, 1 request: {made} tokens in {took:.2f}s = {made / took:.1f} tokens/s")

    loop = DecodeLoop(decoder, tokenizer, DecodingConfig(max_batch_sequences=args.concurrent))
    loop.start()
    try:
        made, took = await through_loop(loop, batch[:1], args.new_tokens)
        print(f"decode loop, 1 request: {made} tokens in {took:.2f}s = {made / took:.1f} tokens/s")
        made, took = await through_loop(loop, batch, args.new_tokens)
        rate = made / took
        print(f"decode loop, {len(batch)} concurrent: {made} tokens in {took:.2f}s = {rate:.1f} tokens/s "
              f"({rate / len(batch):.1f} per sequence)")
    finally:
        await loop.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--concurrent", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: the cores available")
    asyncio.run(main(parser.parse_args()))
