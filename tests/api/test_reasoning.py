"""Reasoning models (issue 15, item 5): a `<think>` block answered apart as `reasoning_content`, whole and streamed
(tags split across tokens included), or kept inline with `--reasoning inline`."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from squeezer.api.reasoning import ReasoningStream, split_reasoning
from squeezer.testing.server import ServerProcess

# A template that opens the block in the prompt, as Qwen3's and DeepSeek-R1's do: the answer starts inside it
THINKING = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}")
ASK = [{"role": "user", "content": "What is two and two?"}]


def test_whole_answers_split() -> None:
    assert split_reasoning("<think>2+2, so</think>\n\nIt is 4.") == ("2+2, so", "It is 4.")
    assert split_reasoning("It is 4.") == (None, "It is 4.")
    assert split_reasoning("2+2</think>4", opened=True) == ("2+2", "4")
    assert split_reasoning("<think>still thinking") == ("still thinking", "")  # cut short inside the block


@pytest.mark.parametrize("pieces, opened, reasoning, content", [
    (["<th", "ink>", "let me", " see</th", "ink>", "\n", "Four", "."], False, "let me see", "Four."),
    (["a", "bc</", "think>ok"], True, "abc", "ok"),
    (["Hel", "lo <think>"], False, "", "Hello <think>"),  # a tag mid-answer is text
    (["<think>never", " closed"], False, "never closed", ""),
])
def test_streamed_pieces_split_at_tags_across_tokens(pieces, opened, reasoning, content) -> None:
    stream = ReasoningStream(opened)
    out = [stream.feed(p) for p in pieces] + [stream.flush()]
    assert ("".join(r for r, _ in out), "".join(c for _, c in out)) == (reasoning, content)


@pytest.fixture(scope="module")
def thinking_model(tiny_decoder_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("thinking") / "llama"
    shutil.copytree(tiny_decoder_path("llama"), folder)
    (folder / "chat_template.jinja").write_text(THINKING)
    return folder


@pytest.mark.parametrize("mode", ["split", "inline"])
def test_the_block_is_answered_apart_or_inline(thinking_model, tmp_path, mode) -> None:
    srv = ServerProcess([f"m={thinking_model}", "--reasoning", mode], tmp_path)
    body = {"model": "m", "messages": ASK, "max_tokens": 12, "temperature": 0}
    try:
        srv.wait_ready()
        whole = httpx.post(srv.url + "/v1/chat/completions", json=body).json()["choices"][0]["message"]
        with httpx.stream("POST", srv.url + "/v1/chat/completions", json={**body, "stream": True}) as response:
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    finally:
        srv.stop()
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    streamed = {k: "".join(d.get(k) or "" for d in deltas) for k in ("reasoning_content", "content")}
    if mode == "split":  # the tiny model never writes </think>: all of its answer is reasoning, cut short
        assert whole["content"] == "" and whole["reasoning_content"]
        assert streamed == {"reasoning_content": whole["reasoning_content"], "content": ""}
    else:
        assert "reasoning_content" not in whole and whole["content"]
        assert streamed == {"reasoning_content": "", "content": whole["content"]}
