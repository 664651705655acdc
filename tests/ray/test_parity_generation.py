"""The single-process server's generation tests (tests/api/test_generation_api.py), unchanged, against the Ray
deployment on two replicas: TGI, OpenAI and Inference API routes, streams, and their 4xx errors. `gen_server` is
tests/ray/conftest.py's; the tests that read one process's /metrics stay in tests/api."""

from __future__ import annotations

import pytest

from tests.api.test_generation_api import (  # noqa: F401  (collected here, against the Ray deployment)
    reference,
    test_chat_through_huggingface_hub_and_openai,
    test_generation_errors,
    test_inference_api_body_shapes,
    test_inference_api_text_generation_is_greedy_generate,
    test_logprobs_through_tgi_and_openai_clients,
    test_openai_completions_and_stop_sequences,
    test_penalties_reach_the_decoder_from_tgi_and_openai,
    test_tgi_generate_and_stream,
    test_the_server_root_answers_like_tgi,
)

pytestmark = pytest.mark.ray
