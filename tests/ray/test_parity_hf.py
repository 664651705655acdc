"""The single-process server's Inference API and TEI tests (tests/api/test_hf_api.py), unchanged, against the Ray
deployment on two replicas: the same routes, answers and errors. `server` is tests/ray/conftest.py's."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from squeezer.ray_serve.replica import REPLICA_HEADER
from squeezer.testing.server import ServerProcess

from tests.api.test_hf_api import (  # noqa: F401  (collected here, against the Ray deployment)
    test_bad_requests_get_json_errors,
    test_bare_string_and_raw_text_bodies,
    test_feature_extraction_matches_sentence_transformers,
    test_fill_mask,
    test_health_info_and_models,
    test_list_inputs_give_one_result_each_in_order,
    test_oversized_payload_is_refused_with_413,
    test_question_answering,
    test_text_classification,
    test_the_server_root_embeds_with_the_first_model_like_tei,
    test_token_classification,
    test_token_embeddings_for_a_plain_model,
    test_truncation_is_announced_and_can_be_refused,
    test_unknown_route_and_method_are_json,
    test_zero_shot_classification,
)

pytestmark = pytest.mark.ray


def test_two_replicas_both_answer_under_load(server: ServerProcess) -> None:
    """48 requests at once: Ray spreads them over both replicas (each batches its share), and all are answered."""

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            bodies = [{"inputs": f"text number {i}", "options": {"use_cache": False}} for i in range(48)]
            return list(await asyncio.gather(*(client.post("/models/tiny/base", json=b) for b in bodies)))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * len(responses)
    assert len({r.headers[REPLICA_HEADER] for r in responses}) == 2
