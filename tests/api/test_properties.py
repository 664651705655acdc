"""Property-based hostile input (issue 13): whatever JSON a client sends to any route, with any value in any
parameter (huge and tiny numbers, NaN, infinities, wrong types, nesting), the answer is never a 5xx, an error
is JSON that says what was wrong, and a stream never ends in an internal error. hypothesis generates the
bodies; a real server process answers them.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squeezer.testing.server import ServerProcess
from tests.helpers import error_message

# Bodies tried per route; SQUEEZER_PROPERTY_EXAMPLES=1000 hunts deeper by hand (800 per route found nothing more).
EXAMPLES = int(os.environ.get("SQUEEZER_PROPERTY_EXAMPLES", "150"))

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, 1, -1, 2, 0.0, 1e-45, 1e308, "", "x", "\u00b2", "7"]),
    st.text(max_size=12),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                      max_leaves=8)
GENERATION = ["max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "frequency_penalty",
              "presence_penalty", "logit_bias", "do_sample", "seed", "stop", "num_return_sequences", "details",
              "top_n_tokens", "return_full_text", "truncate", "num_beams", "min_new_tokens"]
OPENAI = ["max_tokens", "temperature", "top_p", "seed", "stop", "n", "frequency_penalty", "presence_penalty",
          "logit_bias", "logprobs", "top_logprobs", "stream", "stream_options", "echo", "tools", "response_format"]
ENCODER = ["top_k", "function_to_apply", "aggregation_strategy", "targets", "candidate_labels", "multi_label",
           "hypothesis_template", "doc_stride", "max_answer_len", "max_seq_len", "normalize", "truncate"]


def some_of(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(names), VALUES, max_size=4)


ROUTES: dict[str, st.SearchStrategy[Any]] = {
    "/models/emb": st.fixed_dictionaries({"inputs": VALUES, "parameters": some_of(ENCODER) | VALUES}),
    "/models/cls": st.fixed_dictionaries({"inputs": VALUES, "parameters": some_of(ENCODER)}),
    "/models/t2t": st.fixed_dictionaries({"inputs": VALUES, "parameters": some_of(GENERATION)}),
    "/generate": st.fixed_dictionaries({"inputs": st.text(min_size=1, max_size=30) | VALUES, "parameters": some_of(GENERATION)}),
    "/generate_stream": st.fixed_dictionaries({"inputs": st.text(min_size=1, max_size=30), "parameters": some_of(GENERATION)}),
    "/v1/chat/completions": st.builds(
        lambda extra, messages: {"model": "chat", "messages": messages, **extra}, some_of(OPENAI),
        st.just([{"role": "user", "content": "Hi"}]) | VALUES),
    "/v1/completions": st.builds(lambda extra, prompt: {"model": "chat", "prompt": prompt, **extra}, some_of(OPENAI),
                                 st.text(min_size=1, max_size=30) | VALUES),
    "/v1/embeddings": st.builds(lambda extra, text: {"model": "emb", "input": text, **extra},
                                st.dictionaries(st.sampled_from(["dimensions", "encoding_format", "user"]), VALUES, max_size=2),
                                st.text(max_size=20) | VALUES),
    "/embed": st.builds(lambda extra, text: {"inputs": text, **extra},
                        st.dictionaries(st.sampled_from(["normalize", "truncate", "model"]), VALUES, max_size=2), VALUES),
    "/tokenize": st.builds(lambda extra, text: {"inputs": text, **extra},
                           st.dictionaries(st.sampled_from(["add_special_tokens", "model"]), VALUES, max_size=2), VALUES),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model, tiny_decoder_path, tiny_seq2seq_path):
    models = [f"emb={tiny_model('bert', 'base')}", f"cls={tiny_model('bert', 'sequence-classification')}",
              f"chat={tiny_decoder_path('llama')}", f"t2t={tiny_seq2seq_path('t5')}"]
    # Small generation bounds keep every accepted request quick: the property is about answers, not speed.
    proc = ServerProcess([*models, "--max-new-tokens", "12", "--default-new-tokens", "6", "--max-input-chars", "2000"],
                         tmp_path_factory.mktemp("props"))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def check(client: httpx.Client, route: str, body: Any) -> None:
    content = json.dumps(body, allow_nan=True)
    response = client.post(route, content=content, headers={"content-type": "application/json"})
    assert response.status_code < 500, (route, content, response.text)
    if response.status_code >= 400:
        assert error_message(response), (route, content, response.text)
    elif response.headers.get("content-type", "").startswith("text/event-stream"):
        assert "internal error" not in response.text, (route, content, response.text)


@pytest.mark.parametrize("route", list(ROUTES))
def test_no_body_gets_a_server_error(server, route: str) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:

        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(ROUTES[route])
        def property_holds(body: Any) -> None:
            check(client, route, body)

        property_holds()
    assert httpx.get(server.url + "/health").status_code == 200, server.logs()
