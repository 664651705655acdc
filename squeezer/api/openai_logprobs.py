"""OpenAI's log-probability fields: the request's (`logprobs`, `top_logprobs`) and the answer's two shapes.

Chat asks with `logprobs: true` (and `top_logprobs: N` alternatives) and answers `{"content": [{token, logprob,
bytes, top_logprobs}]}`; the legacy completions route asks with `logprobs: N` and answers parallel lists
(`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`). Both come from the decode loop's per-token
logprobs (see `squeezer.generation.logprobs.token_logprobs`), which TGI's `details` report too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from squeezer.errors import ClientError
from squeezer.runtime.base import Vocabulary

Top = tuple[tuple[int, float], ...]


def logprob_parameters(body: dict[str, Any], chat: bool) -> dict[str, Any]:
    """The generation parameters that make the decode loop report logprobs, from an OpenAI body."""
    logprobs, top = body.get("logprobs"), body.get("top_logprobs")
    if chat:
        if logprobs is not None and not isinstance(logprobs, bool):
            raise ClientError(f"logprobs: expected a boolean, got {logprobs!r}", status=422)
        if top is not None and not logprobs:
            raise ClientError("top_logprobs: needs logprobs: true", status=422)
        wanted, alternatives = bool(logprobs), top
    else:
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int)):
            raise ClientError(f"logprobs: expected how many alternatives to report (an integer), got {logprobs!r}", status=422)
        wanted, alternatives = logprobs is not None, logprobs
    return {"details": True, "top_n_tokens": alternatives} if wanted else {}


def _entry(vocabulary: Vocabulary, token: int, logprob: float | None) -> dict[str, Any]:
    text = vocabulary.text(token)
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def chat_logprobs(vocabulary: Vocabulary, tokens: Sequence[int], logprobs: Sequence[float | None], tops: Sequence[Top]) -> dict[str, Any]:
    """Chat's `logprobs` object for these tokens."""
    content = [
        {**_entry(vocabulary, token, logprob), "top_logprobs": [_entry(vocabulary, t, lp) for t, lp in top]}
        for token, logprob, top in zip(tokens, logprobs, tops)
    ]
    return {"content": content, "refusal": None}


def text_logprobs(vocabulary: Vocabulary, tokens: Sequence[int], logprobs: Sequence[float | None], tops: Sequence[Top],
                  offset: int) -> dict[str, Any]:
    """The legacy completions' `logprobs` object; `offset` is where the first token's text starts in the answer."""
    texts = [vocabulary.text(token) for token in tokens]
    offsets = []
    for text in texts:
        offsets.append(offset)
        offset += len(text)
    return {
        "tokens": texts,
        "token_logprobs": list(logprobs),
        "top_logprobs": [{vocabulary.text(t): lp for t, lp in top} for top in tops],
        "text_offset": offsets,
    }
