"""Malformed requests across every encoder task never get a 5xx or a non-JSON answer."""

from __future__ import annotations

import itertools
import random

import httpx
from tests.helpers import error_message

MODELS = [
    "tiny/base", "tiny/text-classification", "tiny/token-classification", "tiny/question-answering",
    "tiny/fill-mask", "tiny/zero-shot", "tiny/base/pipeline/sentence-similarity",
]
INPUTS = [
    None, True, 0, -1, 1.5, 10**30, "", " ", "x", "[MASK]", "a " * 300, [], [""], ["x", 1], [[]], {},
    {"question": "q"}, {"question": "q", "context": "c"}, {"question": 1, "context": []},
    {"source_sentence": "a", "sentences": ["b"]}, {"source_sentence": None}, [{"question": "q", "context": "c"}, "x"],
]
PARAMETERS = [
    None, {}, "x", [], {"top_k": "3"}, {"top_k": -5}, {"top_k": 10**12}, {"candidate_labels": "a,b"},
    {"candidate_labels": [1]}, {"aggregation_strategy": None}, {"targets": ["zzzzqq"]}, {"targets": []},
    {"max_answer_len": 0}, {"doc_stride": 10**9}, {"truncate": "no"}, {"function_to_apply": "relu"},
    {"normalize": 1}, {"handle_impossible_answer": True}, {"multi_label": True, "candidate_labels": ["a"]},
]


def test_no_malformed_request_gets_a_server_error(server) -> None:
    rng = random.Random(0)
    cases = list(itertools.product(MODELS, INPUTS, PARAMETERS))
    failures = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for model, inputs, parameters in rng.sample(cases, 400):
            body = {"inputs": inputs, **({"parameters": parameters} if parameters is not None else {})}
            response = client.post(f"/models/{model}", json=body)
            if response.status_code >= 500 or not response.headers["content-type"].startswith("application/json"):
                failures.append((model, body, response.status_code, response.text[:200]))
            elif response.status_code >= 400:
                assert error_message(response), body
    assert not failures, failures[:5]
