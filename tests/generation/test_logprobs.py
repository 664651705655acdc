"""Token log-probabilities: log-softmax of the logits, and the top alternatives best first."""

from __future__ import annotations

import pytest
import torch

from squeezer.generation.logprobs import token_logprobs


def test_token_logprobs_are_log_softmax_with_the_top_alternatives_best_first() -> None:
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 30  # wide: a naive exp would overflow
    reference = torch.log_softmax(logits.double(), dim=-1)
    logprob, top = token_logprobs(logits.numpy(), 17, 4)
    assert logprob == pytest.approx(reference[17].item(), abs=1e-5)
    best = reference.topk(4)
    assert [t for t, _ in top] == best.indices.tolist()
    assert [lp for _, lp in top] == pytest.approx(best.values.tolist(), abs=1e-5)
    assert token_logprobs(logits.numpy(), 17, 0)[1] == ()


@pytest.mark.parametrize("vocab", [3, 40, 1000, 49152])
def test_top_tokens_are_the_largest_logits_for_any_vocabulary_and_ties(vocab: int) -> None:
    gen = torch.Generator().manual_seed(vocab)
    for top_n in (1, 3, 20):
        for logits in (torch.randn(vocab, generator=gen) * 4, torch.randint(0, 3, (vocab,), generator=gen).float()):
            n = min(top_n, vocab)
            _, top = token_logprobs(logits.numpy(), 0, n)
            assert len({t for t, _ in top}) == n
            assert [logits[t].item() for t, _ in top] == logits.sort(descending=True).values[:n].tolist()
