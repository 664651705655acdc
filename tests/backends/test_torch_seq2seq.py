"""The encoder-decoder generator's streaming hooks: every chosen token is seen, and `stop` ends generation."""

from __future__ import annotations

from pathlib import Path

from squeezer.backends.torch_seq2seq import TorchSeq2Seq
from squeezer.config import ModelConfig
from squeezer.loading import load_info
from squeezer.sources import ModelSource
from squeezer.tasks.seq2seq import Seq2SeqParams
from squeezer.testing.tiny_seq2seq import build


def test_streamed_tokens_are_the_generated_ones_and_stop_ends_early(tmp_path: Path) -> None:
    source = ModelSource("t2t", build("t5", tmp_path / "t2t"))
    info, _ = load_info(source, ModelConfig())
    generator = TorchSeq2Seq.load(source, ModelConfig(), info.tokenizer, "text2text-generation")
    prompt = list(info.tokenizer("translate: hello there")["input_ids"])
    greedy = Seq2SeqParams(max_new_tokens=12, min_new_tokens=12, num_beams=1, do_sample=False)

    seen: list[int] = []
    [full] = generator.generate([prompt], greedy, on_token=seen.append)
    assert seen == full[1:] and len(seen) == 12  # after the decoder start token, each token once, in order

    cut: list[int] = []
    [stopped] = generator.generate([prompt], greedy, on_token=cut.append, stop=lambda: len(cut) >= 3)
    assert stopped == full[:4] and cut == full[1:4]  # stopped after the step that made the third token


def test_a_seeded_request_leaves_torchs_global_generator_alone(tiny_seq2seq_path) -> None:
    """`generate` samples from torch's global generator: a request's seed must not fix other clients' draws
    (issue 13), and the same seed must still draw the same tokens."""
    import torch

    source = ModelSource("t2t", tiny_seq2seq_path("t5"))
    info, _ = load_info(source, ModelConfig())
    generator = TorchSeq2Seq.load(source, ModelConfig(), info.tokenizer, "text2text-generation")
    prompt = list(info.tokenizer("translate: hello there")["input_ids"])
    sampled = Seq2SeqParams(max_new_tokens=8, num_beams=1, do_sample=True, seed=7)
    before = torch.get_rng_state()
    first = generator.generate([prompt], sampled)
    assert torch.equal(torch.get_rng_state(), before)
    assert generator.generate([prompt], sampled) == first
    unseeded = Seq2SeqParams(max_new_tokens=8, num_beams=1, do_sample=True)
    generator.generate([prompt], unseeded)
    assert torch.equal(torch.get_rng_state(), before)
