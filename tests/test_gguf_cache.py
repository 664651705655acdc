"""A GGUF's config and tokenizer: converted once, then loaded from the cache without reading the file, and the
same as transformers' own conversion in everything a server uses (SmolLM2-135M-Instruct's real GGUF)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from squeezer import gguf_cache
from squeezer.sources import ModelSource

TEXTS = ["Hello, world!", "  leading spaces and\ttabs\n\nnewlines", "naïve café — 東京 🚀", "<|im_start|>user\nhi<|im_end|>",
         "def f(x):\n    return x ** 2  # code", ""]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}]


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every time the gguf package's reader opens a file."""
    import gguf

    opened: list[str] = []
    init = gguf.GGUFReader.__init__

    def counting(self: Any, path: Any, *args: Any, **kwargs: Any) -> None:
        opened.append(str(path))
        init(self, path, *args, **kwargs)

    monkeypatch.setattr(gguf.GGUFReader, "__init__", counting)
    return opened


def test_converted_once_then_loaded_without_reading_the_file(smollm2_file, tmp_path: Path, reads: list[str]) -> None:
    from transformers import AutoConfig, AutoTokenizer

    folder, name = smollm2_file
    source = ModelSource("smollm2", folder, gguf_file=name)
    first_config, first = gguf_cache.config_and_tokenizer(source, cache=tmp_path)
    assert reads and (tmp_path / gguf_cache.entry_key(source) / "tokenizer.json").is_file()
    reads.clear()
    config, tokenizer = gguf_cache.config_and_tokenizer(source, cache=tmp_path)
    assert reads == []  # the cache entry, not the GGUF

    direct = AutoTokenizer.from_pretrained(str(folder), gguf_file=name, use_fast=True)
    direct_config = AutoConfig.from_pretrained(str(folder), gguf_file=name)
    for loaded in (first, tokenizer):
        assert type(loaded) is type(direct) and loaded.is_fast
        assert [loaded(t)["input_ids"] for t in TEXTS] == [direct(t)["input_ids"] for t in TEXTS]
        assert loaded.decode(direct(TEXTS[2])["input_ids"]) == direct.decode(direct(TEXTS[2])["input_ids"])
        assert loaded.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True) == \
            direct.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
        assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id, loaded.all_special_tokens,
                loaded.model_max_length) == (direct.bos_token_id, direct.eos_token_id, direct.pad_token_id,
                                             direct.all_special_tokens, direct.model_max_length)
    ignored = {"_name_or_path", "transformers_version"}
    want = {k: v for k, v in direct_config.to_dict().items() if k not in ignored}
    for loaded_config in (first_config, config):
        assert {k: v for k, v in loaded_config.to_dict().items() if k not in ignored} == want


def test_a_file_changed_in_place_is_converted_again(smollm2_file, tmp_path: Path) -> None:
    folder, name = smollm2_file
    copy = tmp_path / "model"
    copy.mkdir()
    shutil.copyfile(folder / name, copy / name)  # a copy: the shared file's own time must not change
    source = ModelSource("smollm2", copy, gguf_file=name)
    before = gguf_cache.entry_key(source)
    stat = (copy / name).stat()
    os.utime(copy / name, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert gguf_cache.entry_key(source) != before


def test_an_unwritable_cache_costs_only_the_time(smollm2_file, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder, name = smollm2_file
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("a file where the cache folder would go")
    config, tokenizer = gguf_cache.config_and_tokenizer(ModelSource("smollm2", folder, gguf_file=name), cache=blocked)
    assert tokenizer("hi")["input_ids"] and config.model_type == "llama"
    assert "could not cache the GGUF's converted config and tokenizer" in caplog.text


def test_weights_dequantized_once_then_read_from_the_cache(smollm2_file, tmp_path: Path, reads: list[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from squeezer.backends.torch_decoder import TorchDecoder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder, name = smollm2_file
    source = ModelSource("smollm2", folder, gguf_file=name)
    first = TorchDecoder.load(source).model
    assert reads and gguf_cache.weights_folder(source) is not None
    assert not (tmp_path / "squeezer" / "gguf" / gguf_cache.entry_key(source) / "tokenizer.model").exists()
    reads.clear()
    again = TorchDecoder.load(source).model
    assert reads == []  # neither the metadata nor the tensors were read from the GGUF
    want, got = first.state_dict(), again.state_dict()
    assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert all(got[k].dtype == torch.float32 for k in got)
    assert again.lm_head.weight.data_ptr() == again.model.embed_tokens.weight.data_ptr()  # still tied


def test_weights_are_not_cached_without_room_on_the_disk(smollm2_file, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    folder, name = smollm2_file
    source = ModelSource("smollm2", folder, gguf_file=name)
    gguf_cache.config_and_tokenizer(source, cache=tmp_path)
    monkeypatch.setattr(gguf_cache, "SHARE_OF_FREE_DISK", 1e-12)
    with caplog.at_level("INFO", logger="squeezer.gguf_cache"):
        gguf_cache.store_weights(source, tiny_llama(), cache=tmp_path)
    assert gguf_cache.weights_folder(source, cache=tmp_path) is None
    assert "not caching the GGUF's" in caplog.text and "of disk free" in caplog.text


def test_a_changed_file_s_earlier_entry_is_removed_with_its_weights(smollm2_file, tmp_path: Path) -> None:
    folder, name = smollm2_file
    copy = tmp_path / "model"
    copy.mkdir()
    shutil.copyfile(folder / name, copy / name)
    source, cache = ModelSource("smollm2", copy, gguf_file=name), tmp_path / "cache"
    gguf_cache.config_and_tokenizer(source, cache=cache)
    gguf_cache.store_weights(source, tiny_llama(), cache=cache)
    old = cache / gguf_cache.entry_key(source)
    assert (old / gguf_cache.WEIGHTS / "model.safetensors").is_file()
    other_version = cache / "same-file-other-transformers"  # the same file as it is now, converted by another version
    other_version.mkdir()
    shutil.copyfile(old / gguf_cache.SOURCE, other_version / gguf_cache.SOURCE)
    stat = (copy / name).stat()
    os.utime(copy / name, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    unrelated = cache / "unrelated"
    unrelated.mkdir()

    gguf_cache.config_and_tokenizer(source, cache=cache)
    assert old.is_dir()  # kept until the new version's weights are written
    gguf_cache.store_weights(source, tiny_llama(), cache=cache)
    assert gguf_cache.weights_folder(source, cache=cache) is not None
    assert not old.exists() and not other_version.exists()  # both describe the file before it changed
    assert unrelated.is_dir()


def test_a_version_s_entry_of_the_same_file_is_kept(smollm2_file, tmp_path: Path) -> None:
    folder, name = smollm2_file
    source = ModelSource("smollm2", folder, gguf_file=name)
    gguf_cache.config_and_tokenizer(source, cache=tmp_path)
    entry = tmp_path / gguf_cache.entry_key(source)
    other_version = tmp_path / "same-file-other-transformers"
    other_version.mkdir()
    shutil.copyfile(entry / gguf_cache.SOURCE, other_version / gguf_cache.SOURCE)
    gguf_cache.store_weights(source, tiny_llama(), cache=tmp_path)
    assert gguf_cache.weights_folder(source, cache=tmp_path) is not None and other_version.is_dir()


def tiny_llama() -> Any:
    """A random two-layer Llama: what `store_weights` saves does not depend on the weights' values."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2))
