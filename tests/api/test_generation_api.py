"""Generation through a real server: the Inference API, TGI and OpenAI routes with their real clients."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from huggingface_hub import InferenceClient

from squeezer.testing.server import ServerProcess, metric
from squeezer.testing.tiny_decoders import reference_generate
from tests.helpers import error_message

PROMPT = "Hello there, how are"
CHAT = [{"role": "user", "content": "Say something nice."}]


@pytest.fixture(scope="module")
def gen_server(tiny_decoder_path, tmp_path_factory):
    specs = [f"tiny/llama={tiny_decoder_path('llama')}", f"tiny/gpt2={tiny_decoder_path('gpt2')}"]
    proc = ServerProcess(specs, tmp_path_factory.mktemp("gen-logs"))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def reference(tiny_decoder_path):
    """Greedy continuation text of a prompt (plain or chat) by transformers' generate, per arch."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = {}

    def run(arch: str, n: int, prompt: str | None = None, messages: list | None = None) -> str:
        if arch not in cache:
            folder = tiny_decoder_path(arch)
            cache[arch] = (AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder))
        model, tok = cache[arch]
        ids = tok.apply_chat_template(messages, add_generation_prompt=True) if messages else tok(prompt, add_special_tokens=False)["input_ids"]
        return tok.decode(reference_generate(model, list(ids), n), skip_special_tokens=True)

    return run


def sse_events(response: httpx.Response) -> list:
    return [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]


def test_the_server_root_answers_like_tgi(gen_server, reference) -> None:
    """TGI users give the client the server's address alone; the root answers for the first generative model."""
    client = InferenceClient(model=gen_server.url)
    assert client.text_generation(PROMPT, max_new_tokens=8) == reference("llama", 8, prompt=PROMPT)
    streamed = list(client.text_generation(PROMPT, max_new_tokens=8, stream=True, details=True))
    assert "".join(e.token.text for e in streamed) == reference("llama", 8, prompt=PROMPT)
    assert streamed[-1].details.generated_tokens == len(streamed)
    bad = httpx.post(gen_server.url + "/", json={"inputs": PROMPT, "parameters": {"max_new_tokens": -1}})
    assert bad.status_code == 422 and "max_new_tokens" in error_message(bad)
    from huggingface_hub.errors import ValidationError  # raised from TGI's `error_type`, with the server's reason

    with pytest.raises(ValidationError, match="max_new_tokens"):
        client.text_generation(PROMPT, max_new_tokens=-1)
    with pytest.raises(ValidationError, match="max_new_tokens"):
        list(client.text_generation(PROMPT, max_new_tokens=-1, stream=True))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_inference_api_text_generation_is_greedy_generate(gen_server, reference, arch) -> None:
    client = InferenceClient(model=f"{gen_server.url}/models/tiny/{arch}")
    text = client.text_generation(PROMPT, max_new_tokens=12)
    assert text == reference(arch, 12, prompt=PROMPT)
    streamed = "".join(client.text_generation(PROMPT, max_new_tokens=12, stream=True))
    assert streamed == text
    detailed = client.text_generation(PROMPT, max_new_tokens=12, details=True)
    assert detailed.generated_text == text and detailed.details.generated_tokens <= 12
    assert detailed.details.finish_reason in {"length", "eos_token"}
    full = client.text_generation(PROMPT, max_new_tokens=12, return_full_text=True)
    assert full == PROMPT + text


def test_inference_api_body_shapes(gen_server, reference) -> None:
    url = f"{gen_server.url}/models/tiny/llama"
    one = httpx.post(url, json={"inputs": PROMPT, "parameters": {"max_new_tokens": 6}}).json()
    assert one == [{"generated_text": reference("llama", 6, prompt=PROMPT)}]
    many = httpx.post(url, json={"inputs": [PROMPT, "Another"], "parameters": {"max_new_tokens": 4}}).json()
    assert len(many) == 2 and many[0][0]["generated_text"] == reference("llama", 4, prompt=PROMPT)
    sampled = httpx.post(url, json={"inputs": PROMPT, "parameters": {"max_new_tokens": 6, "do_sample": True, "seed": 7, "num_return_sequences": 3}}).json()
    again = httpx.post(url, json={"inputs": PROMPT, "parameters": {"max_new_tokens": 6, "do_sample": True, "seed": 7, "num_return_sequences": 3}}).json()
    assert len(sampled) == 3 and sampled == again


def test_tgi_generate_and_stream(gen_server, reference) -> None:
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 10, "details": True}}
    whole = httpx.post(gen_server.url + "/generate", json={**body, "model": "tiny/llama"}).json()
    assert whole["generated_text"] == reference("llama", 10, prompt=PROMPT)
    assert whole["details"]["generated_tokens"] == len(whole["details"]["tokens"])
    with httpx.stream("POST", gen_server.url + "/generate_stream", json={**body, "model": "tiny/llama"}) as response:
        events = [json.loads(e) for e in sse_events(response)]
    assert "".join(e["token"]["text"] for e in events) == whole["generated_text"]
    assert events[-1]["generated_text"] == whole["generated_text"] and events[-1]["details"]["finish_reason"]
    assert all(e["generated_text"] is None for e in events[:-1])


def test_chat_through_huggingface_hub_and_openai(gen_server, reference) -> None:
    from openai import OpenAI

    expected = reference("llama", 10, messages=CHAT)
    hub = InferenceClient(model=f"{gen_server.url}/models/tiny/llama")
    out = hub.chat_completion(CHAT, max_tokens=10, temperature=0)
    assert out.choices[0].message.content == expected
    openai = OpenAI(base_url=gen_server.url + "/v1", api_key="unused")
    done = openai.chat.completions.create(model="tiny/llama", messages=CHAT, max_tokens=10, temperature=0)
    assert done.choices[0].message.content == expected
    assert done.usage.completion_tokens <= 10 and done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    chunks = list(openai.chat.completions.create(model="tiny/llama", messages=CHAT, max_tokens=10, temperature=0, stream=True,
                                                  stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert chunks[-1].usage.completion_tokens == done.usage.completion_tokens
    streamed_hub = "".join(c.choices[0].delta.content or "" for c in hub.chat_completion(CHAT, max_tokens=10, temperature=0, stream=True))
    assert streamed_hub == expected


def test_logprobs_through_tgi_and_openai_clients(gen_server) -> None:
    """Greedy: each token is its step's most likely, so it heads its own top list; every route reports the same
    numbers, streamed or not."""
    from openai import OpenAI

    hub = InferenceClient(model=f"{gen_server.url}/models/tiny/llama")
    detailed = hub.text_generation(PROMPT, max_new_tokens=6, details=True, top_n_tokens=2)
    tokens, tops = detailed.details.tokens, detailed.details.top_tokens
    assert len(tokens) == len(tops) == 6 and all(t.logprob is not None and t.logprob <= 0 for t in tokens)
    # huggingface_hub leaves details.top_tokens (a list of lists) as plain dicts
    assert all(len(top) == 2 and top[0]["id"] == t.id and top[0]["logprob"] == t.logprob for top, t in zip(tops, tokens))
    streamed = list(hub.text_generation(PROMPT, max_new_tokens=6, details=True, top_n_tokens=2, stream=True))
    assert [e.token.logprob for e in streamed] == pytest.approx([t.logprob for t in tokens], abs=1e-6)
    assert [[t.id for t in e.top_tokens] for e in streamed] == [[t["id"] for t in top] for top in tops]

    client = OpenAI(base_url=gen_server.url + "/v1", api_key="unused")
    ask = {"model": "tiny/llama", "messages": CHAT, "max_tokens": 6, "temperature": 0, "logprobs": True, "top_logprobs": 2}
    chat = client.chat.completions.create(**ask)
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens
    assert all(len(c.top_logprobs) == 2 and c.top_logprobs[0].logprob == c.logprob <= 0 for c in content)
    chunks = list(client.chat.completions.create(**ask, stream=True))
    streamed_lps = [c.logprob for k in chunks if k.choices and k.choices[0].logprobs for c in k.choices[0].logprobs.content]
    assert streamed_lps == pytest.approx([c.logprob for c in content], abs=1e-6)
    plain = client.chat.completions.create(**{**ask, "logprobs": None, "top_logprobs": None})
    assert plain.choices[0].logprobs is None

    text = client.completions.create(model="tiny/llama", prompt=PROMPT, max_tokens=6, temperature=0, logprobs=2)
    legacy = text.choices[0].logprobs
    assert legacy.token_logprobs == pytest.approx([t.logprob for t in tokens], abs=1e-6)  # the same greedy tokens
    assert [len(top) for top in legacy.top_logprobs] == [2] * 6 and legacy.text_offset[0] == 0
    assert legacy.text_offset == sorted(legacy.text_offset)


def test_penalties_reach_the_decoder_from_tgi_and_openai(gen_server) -> None:
    from openai import OpenAI

    def tgi(**params) -> str:
        body = {"model": "tiny/llama", "inputs": PROMPT, "parameters": {"max_new_tokens": 16, **params}}
        return httpx.post(gen_server.url + "/generate", json=body, timeout=60).json()["generated_text"]

    penalized = tgi(frequency_penalty=2.0, presence_penalty=2.0)
    assert penalized != tgi()
    client = OpenAI(base_url=gen_server.url + "/v1", api_key="unused")
    text = client.completions.create(model="tiny/llama", prompt=PROMPT, max_tokens=16, temperature=0,
                                     frequency_penalty=2.0, presence_penalty=2.0)
    assert text.choices[0].text == penalized

    body = {"model": "tiny/llama", "inputs": PROMPT, "parameters": {"max_new_tokens": 5, "details": True, "logit_bias": {"42": 100}}}
    forced = httpx.post(gen_server.url + "/generate", json=body, timeout=60).json()
    assert [t["id"] for t in forced["details"]["tokens"]] == [42] * 5
    text = client.completions.create(model="tiny/llama", prompt=PROMPT, max_tokens=5, temperature=0, logit_bias={"42": 100})
    assert text.choices[0].text == forced["generated_text"]


def test_openai_completions_and_stop_sequences(gen_server, reference) -> None:
    from openai import OpenAI

    openai = OpenAI(base_url=gen_server.url + "/v1", api_key="unused")
    expected = reference("gpt2", 12, prompt=PROMPT)
    done = openai.completions.create(model="tiny/gpt2", prompt=PROMPT, max_tokens=12, temperature=0)
    assert done.choices[0].text == expected
    stop = expected[3:5]
    cut = openai.completions.create(model="tiny/gpt2", prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop])
    assert cut.choices[0].text == expected[: expected.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = openai.completions.create(model="tiny/gpt2", prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop], stream=True)
    assert "".join(c.choices[0].text for c in streamed) == cut.choices[0].text


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/models/tiny/llama", {"inputs": PROMPT, "parameters": {"max_new_tokens": 0}}, 422, "max_new_tokens"),
        ("/models/tiny/llama", {"inputs": PROMPT, "parameters": {"max_new_tokens": 5000}}, 422, "max_new_tokens"),
        ("/models/tiny/llama", {"inputs": "word " * 400}, 422, "input tokens"),
        ("/models/tiny/llama", {"inputs": ""}, 422, "inputs"),
        ("/models/tiny/llama", {"inputs": PROMPT, "parameters": {"top_p": 2}}, 422, "top_p"),
        ("/generate", {"model": "tiny/llama", "inputs": 5}, 422, "inputs"),
        ("/v1/chat/completions", {"model": "tiny/llama"}, 422, "messages"),
        ("/v1/chat/completions", {"model": "tiny/llama", "messages": [{"role": "wizard", "content": "x"}]}, 422, "messages"),
        ("/v1/chat/completions", {"model": "tiny/llama", "messages": CHAT, "presence_penalty": 2.5}, 422, "presence_penalty"),
        ("/v1/chat/completions", {"model": "tiny/llama", "messages": CHAT, "logit_bias": {"5": 101}}, 422, "logit_bias"),
        ("/v1/chat/completions", {"model": "tiny/llama", "messages": CHAT, "logit_bias": {"99999999": 1}}, 422, "vocabulary"),
        ("/v1/chat/completions", {"model": "tiny/llama", "messages": CHAT, "tools": [{"type": "function"}]}, 422, "tools"),
        ("/v1/chat/completions", {"model": "tiny/llama", "messages": CHAT, "top_logprobs": 2}, 422, "top_logprobs"),
        ("/v1/chat/completions", {"model": "tiny/llama", "messages": CHAT, "logprobs": "yes"}, 422, "logprobs"),
        ("/v1/completions", {"model": "tiny/llama", "prompt": PROMPT, "logprobs": True}, 422, "logprobs"),
        ("/generate", {"model": "tiny/llama", "inputs": PROMPT, "parameters": {"top_n_tokens": 50}}, 422, "top_n_tokens"),
        ("/v1/chat/completions", {"model": "tiny/gpt2", "messages": CHAT}, 422, "chat template"),
        # OpenAI errors name the field the client sent, not the generation parameter it maps to
        ("/v1/chat/completions", {"model": "tiny/llama", "messages": CHAT, "n": 17}, 422, "^n: must be from 1 to 16"),
        ("/v1/chat/completions", {"model": "tiny/llama", "messages": CHAT, "max_completion_tokens": 5000}, 422,
         "^max_completion_tokens: must be at most"),
        ("/v1/completions", {"model": "tiny/llama", "prompt": PROMPT, "max_tokens": 0}, 422, "^max_tokens: must be"),
        ("/v1/completions", {"model": "tiny/llama", "prompt": PROMPT, "logprobs": 50}, 422, "^logprobs: must be 0 to 20"),
        ("/v1/chat/completions", {"model": "tiny/llama", "messages": CHAT, "top_p": 0}, 422, "^top_p: must be in"),
        ("/v1/chat/completions", {"model": "tiny/llama", "messages": CHAT, "stream": "yes"}, 422, "^stream: expected"),
        ("/models/tiny/llama/pipeline/feature-extraction", {"inputs": PROMPT}, 400, "cannot serve feature-extraction"),
    ],
)
def test_generation_errors(gen_server, path, body, status, fragment) -> None:
    """`fragment` is in the error message; one that starts with ^ is how the message starts."""
    response = httpx.post(gen_server.url + path, json=body)
    assert response.status_code == status, response.text
    error = error_message(response)
    assert error.startswith(fragment[1:]) if fragment.startswith("^") else fragment in error, error


def test_disconnect_frees_the_slot_and_metrics_count(gen_server) -> None:
    """A client that hangs up after one token stops its sequence: far fewer than the 200 tokens it asked for are
    generated (the special tokens, EOS among them, are biased away, so only the disconnect can end it early)."""
    generated = 'squeezer_generated_tokens_total{model="tiny/llama"}'
    before = metric(httpx.get(gen_server.url + "/metrics").text, "squeezer_generated_tokens_total", model="tiny/llama")
    no_specials = {str(i): -100 for i in range(5)}  # <s> </s> <pad> <|im_start|> <|im_end|>
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 200, "logit_bias": no_specials}, "stream": True}
    with httpx.stream("POST", gen_server.url + "/models/tiny/llama", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                break  # one token, then hang up
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        metrics = httpx.get(gen_server.url + "/metrics").text
        if 'squeezer_generation_occupancy{model="tiny/llama"} 0.0' in metrics and generated in metrics:
            break
        time.sleep(0.1)
    assert 'squeezer_generation_occupancy{model="tiny/llama"} 0.0' in metrics
    assert "squeezer_time_to_first_token_seconds_bucket" in metrics
    spent = metric(metrics, "squeezer_generated_tokens_total", model="tiny/llama") - before
    assert 1 <= spent < 100, f"{spent} tokens generated for a client that left after one"


@pytest.mark.slow
def test_smollm2_gguf_serves_chat_like_generate(tmp_path, smollm2_file) -> None:
    """`squeezer serve model.gguf` just works, chat template included, greedy like transformers."""
    from openai import OpenAI
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = smollm2_file
    srv = ServerProcess([str(folder / name)], tmp_path)
    try:
        srv.wait_ready(600)
        model_id = httpx.get(srv.url + "/models").json()[0]["id"]
        held = httpx.get(srv.url + "/info").json()["models"][0]["memory_bytes"]
        answer = OpenAI(base_url=srv.url + "/v1", api_key="x").chat.completions.create(
            model=model_id, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=24, temperature=0
        )
    finally:
        srv.stop()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name).eval()
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True)
    expected = tok.decode(reference_generate(model, list(ids), 24), skip_special_tokens=True)
    assert answer.choices[0].message.content == expected
    assert "Paris" in expected
    # The memory budget counts the float32 model transformers dequantized, not the 4-bit file.
    assert held >= sum(p.numel() * 4 for p in model.parameters()) > 5 * (folder / name).stat().st_size


def test_a_full_generation_queue_answers_429_over_http(tiny_decoder_path, tmp_path) -> None:
    """One slot and one waiting place: of six long requests sent at once, at most two can be accepted (the one
    decoding and the one waiting; which arrive first is the race's), those are answered in full, and the others
    are refused with 429 at once (issue 13: back-pressure checked over HTTP, not only in-process)."""
    import asyncio

    srv = ServerProcess([f"m={tiny_decoder_path('llama')}", "--max-batch-sequences", "1", "--max-waiting", "1"], tmp_path)
    no_specials = {str(i): -100 for i in range(5)}
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 60, "logit_bias": no_specials, "details": True}}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=srv.url, timeout=120) as client:
            return list(await asyncio.gather(*(client.post("/generate", json=body) for _ in range(6))))

    try:
        srv.wait_ready()
        responses = asyncio.run(burst())
    finally:
        srv.stop()
    statuses = sorted(r.status_code for r in responses)
    assert 1 <= statuses.count(200) and statuses.count(429) >= 3 and set(statuses) <= {200, 429}, statuses
    assert all(r.json()["details"]["generated_tokens"] == 60 for r in responses if r.status_code == 200)
    assert all("retry" in error_message(r) for r in responses if r.status_code == 429)


def test_tokenize_on_a_decoder_shows_the_tokens_generation_is_fed(gen_server) -> None:
    """TGI's /tokenize shows what /generate feeds the model: a plain prompt gets no BOS here (as the pipeline
    tokenizes it), so by default neither does /tokenize; a client may still ask for the special tokens."""
    body = {"model": "tiny/llama", "prompt": PROMPT, "max_tokens": 1, "temperature": 0}
    used = httpx.post(gen_server.url + "/v1/completions", json=body).json()["usage"]["prompt_tokens"]
    tokens = httpx.post(gen_server.url + "/tokenize", json={"model": "tiny/llama", "inputs": PROMPT}).json()[0]
    with_specials = httpx.post(gen_server.url + "/tokenize",
                               json={"model": "tiny/llama", "inputs": PROMPT, "add_special_tokens": True}).json()[0]
    assert len(tokens) == used and not any(t["special"] for t in tokens)
    assert len(with_specials) == used + 1 and with_specials[0]["special"]  # the llama tokenizer's BOS
