"""Encoder-decoder tasks (text2text-generation, summarization, translation) against transformers' pipelines."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from squeezer.config import ModelConfig, ServeConfig
from squeezer.detect import detect_task
from squeezer.engine import Engine
from squeezer.errors import ClientError, QueueFullError
from squeezer.scheduling.seq2seq import Seq2SeqScheduler
from squeezer.sources import ModelSource
from squeezer.tasks import ALL_TASKS, InputError
from squeezer.testing.tiny_seq2seq import SUMMARIZE_PREFIX, build

TASK_NAMES = ("text2text-generation", "summarization", "translation")
KEYS = {"text2text-generation": "generated_text", "summarization": "summary_text", "translation": "translation_text"}
TEXT = "The quick brown fox jumps over the lazy dog"
TEXTS = ["The quick brown fox", "What is the capital of France?", "Numbers like 42 appear in texts"]
LONG = " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 12)


def serve(folder: Path, serve_task: str, calls: list[tuple[Any, dict[str, Any] | None]], **run: Any) -> list[Any]:
    """Run each (inputs, parameters) through an Engine serving `folder` for `task`; exceptions are returned."""

    async def go() -> list[Any]:
        engine = Engine([ModelSource("m", folder)], ServeConfig(model=ModelConfig(task=serve_task)))
        await engine.start()
        out: list[Any] = []
        try:
            for inputs, params in calls:
                try:
                    out.append(await engine.run("m", inputs, params, **run))
                except ClientError as exc:
                    out.append(exc)
        finally:
            await engine.close()
        return out

    return asyncio.run(go())


_PIPES: dict[tuple[Path, str], Any] = {}


def pipe(folder: Path, task: str) -> Any:
    from transformers import pipeline

    if (folder, task) not in _PIPES:
        _PIPES[(folder, task)] = pipeline(task, model=str(folder))
    return _PIPES[(folder, task)]


@pytest.mark.parametrize("arch", ["t5", "bart", "marian"])
@pytest.mark.parametrize("task", TASK_NAMES)
def test_matches_pipeline(tiny_seq2seq_path, arch, task) -> None:
    folder = tiny_seq2seq_path(arch)
    p = pipe(folder, task)
    calls = [
        (TEXT, {"max_new_tokens": 10}),
        (TEXT, {"max_new_tokens": 10, "num_beams": 1}),
        (TEXTS, {"max_new_tokens": 8, "num_beams": 2}),
        (TEXTS, {"max_new_tokens": 6, "num_beams": 1}),
    ]
    single, greedy, listed, listed_greedy = serve(folder, task, calls)
    assert single.output == p(TEXT, max_new_tokens=10)
    assert greedy.output == p(TEXT, max_new_tokens=10, num_beams=1)
    assert listed.output == p(TEXTS, max_new_tokens=8, num_beams=2)
    assert listed_greedy.output == p(TEXTS, max_new_tokens=6, num_beams=1)
    key = KEYS[task]
    assert isinstance(single.output, list) and list(single.output[0]) == [key]
    assert len(listed.output) == len(TEXTS) and all(list(r) == [key] for r in listed.output)
    assert single.answer.task == task and not single.answer.truncated


def test_t5_task_prefix_is_applied(tiny_seq2seq_path) -> None:
    folder = tiny_seq2seq_path("t5")
    summary, = serve(folder, "summarization", [(TEXT, {"max_new_tokens": 10, "num_beams": 1})])
    plain = pipe(folder, "text2text-generation")
    prefixed = plain(SUMMARIZE_PREFIX + TEXT, max_new_tokens=10, num_beams=1)[0]["generated_text"]
    assert summary.output == [{"summary_text": prefixed}]
    assert prefixed != plain(TEXT, max_new_tokens=10, num_beams=1)[0]["generated_text"]


@pytest.mark.parametrize("arch", ["t5", "bart", "marian"])
def test_truncation(tiny_seq2seq_path, arch) -> None:
    folder = tiny_seq2seq_path(arch)
    cut, refused = serve(folder, "summarization", [(LONG, {"max_new_tokens": 6}), (LONG, {"max_new_tokens": 6, "truncate": False})])
    assert cut.answer.truncated
    assert cut.output == pipe(folder, "summarization")(LONG, max_new_tokens=6, truncation=True)
    assert isinstance(refused, InputError) and refused.status == 422 and "truncate" in str(refused)


def test_sampling_with_seed_repeats_and_generate_parameters_nest(tiny_seq2seq_path) -> None:
    folder = tiny_seq2seq_path("bart")
    sample = {"max_new_tokens": 8, "do_sample": True, "num_beams": 1, "top_k": 50, "temperature": 1.5, "seed": 7}
    a, b, nested, clean = serve(
        folder,
        "text2text-generation",
        [
            (TEXT, sample),
            (TEXT, sample),
            (TEXT, {"generate_parameters": {"max_new_tokens": 5, "num_beams": 1}}),
            (TEXT, {"max_new_tokens": 5, "num_beams": 1, "clean_up_tokenization_spaces": True, "repetition_penalty": 1.3}),
        ],
        use_cache=False,
    )
    assert a.output == b.output
    p = pipe(folder, "text2text-generation")
    assert nested.output == p(TEXT, max_new_tokens=5, num_beams=1)
    assert clean.output == p(TEXT, max_new_tokens=5, num_beams=1, clean_up_tokenization_spaces=True, repetition_penalty=1.3)


@pytest.mark.parametrize(
    ("inputs", "params", "field"),
    [
        ("", None, "inputs"),
        ([], None, "inputs"),
        (["ok", 3], None, "inputs[1]"),
        (5, None, "inputs"),
        (TEXT, {"max_new_tokens": 0}, "parameters.max_new_tokens"),
        (TEXT, {"max_new_tokens": 5000}, "parameters.max_new_tokens"),
        (TEXT, {"num_beams": "two"}, "parameters.num_beams"),
        (TEXT, {"temperature": 0}, "parameters.temperature"),
        (TEXT, {"top_p": 1.5}, "parameters.top_p"),
        (TEXT, {"top_k": 0}, "parameters.top_k"),
        (TEXT, {"do_sample": "yes"}, "parameters.do_sample"),
        (TEXT, {"seed": -1}, "parameters.seed"),
        (TEXT, {"repetition_penalty": 0}, "parameters.repetition_penalty"),
        (TEXT, {"min_new_tokens": 9, "max_new_tokens": 3}, "parameters.min_new_tokens"),
        (TEXT, {"truncate": "no"}, "parameters.truncate"),
        (TEXT, {"generate_parameters": 3}, "parameters.generate_parameters"),
        (TEXT, [1], "parameters"),
    ],
)
def test_bad_inputs_name_the_field(tiny_seq2seq_path, inputs, params, field) -> None:
    (err,) = serve(tiny_seq2seq_path("bart"), "summarization", [(inputs, params)])
    assert isinstance(err, InputError) and err.status == 422, err
    assert str(err).startswith(field + ":"), str(err)


def test_other_task_on_route_is_refused(tiny_seq2seq_path) -> None:
    (err,) = serve(tiny_seq2seq_path("bart"), "summarization", [(TEXT, None)], task="feature-extraction")
    assert isinstance(err, ClientError) and err.status == 400


def test_detection(tmp_path) -> None:
    import transformers

    t5 = build("t5", tmp_path / "t5")
    config = transformers.AutoConfig.from_pretrained(t5)
    assert detect_task(t5, config) == "text2text-generation"
    for tag in ("summarization", "translation"):
        (t5 / "README.md").write_text(f"---\npipeline_tag: {tag}\n---\n")
        assert detect_task(t5, config) == tag
    marian = tmp_path / "marian"
    marian.mkdir()
    marian_config = transformers.MarianConfig(architectures=["MarianMTModel"])
    assert detect_task(marian, marian_config) == "translation"
    bart = transformers.BartConfig(architectures=["BartForConditionalGeneration"])
    assert detect_task(marian, bart) == "text2text-generation"
    assert all(t in ALL_TASKS for t in TASK_NAMES)
    assert ModelConfig(task="summarization").task == "summarization"
    assert json.loads((t5 / "config.json").read_text())["task_specific_params"]["summarization"]["prefix"] == SUMMARIZE_PREFIX


def test_queue_is_bounded() -> None:
    async def go() -> None:
        scheduler = Seq2SeqScheduler(max_queue=2)
        with pytest.raises(QueueFullError):
            await scheduler.submit(lambda: 1, size=3)
        ran = await scheduler.submit(lambda: 41 + 1, size=2)
        assert ran.value == 42 and scheduler.depth == 0
        await scheduler.drain()

    asyncio.run(go())
