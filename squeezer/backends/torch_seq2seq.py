"""Encoder-decoder models (T5, BART, Marian) in float32 on the CPU, generating with transformers' `generate`.

The generation config is the one `pipeline(task)` builds: the pipeline's defaults (max_new_tokens=256,
num_beams=4) under the model's own generation config, updated with the task's `task_specific_params` (less
the prefix, which the task adds to the text), with the tokenizer's pad token when the model has none. A request's inputs are right-padded into one batch and generated together.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

from squeezer.backends.decoder import eos_ids
from squeezer.backends.torch_backend import import_torch, module_bytes, pretrained
from squeezer.config import ModelConfig
from squeezer.hardware import available_cpus
from squeezer.sources import ModelSource
from squeezer.tasks.seq2seq import Seq2SeqParams, task_params


def pipeline_generation_config(model: Any) -> Any:
    """What `Text2TextGenerationPipeline.__init__` makes of the model's generation config (transformers 4.57)."""
    from transformers import GenerationConfig

    try:
        from transformers.pipelines.text2text_generation import Text2TextGenerationPipeline

        default = copy.deepcopy(Text2TextGenerationPipeline._default_generation_config)
    except (ImportError, AttributeError):
        default = GenerationConfig(max_new_tokens=256, num_beams=4)
    if not hasattr(model, "_prepare_generation_config"):
        return copy.deepcopy(model.generation_config)
    config, _ = model._prepare_generation_config(generation_config=default, use_model_defaults=True)
    if (
        default.max_new_tokens is not None
        and config.max_new_tokens == default.max_new_tokens
        and config.max_length is not None
        and config.max_length != 20
    ):
        config.max_new_tokens = None  # the model's own max_length wins over the pipeline's default, as there
    return config


def decoder_room(config: Any) -> int | None:
    """New tokens the decoder can hold: a model with a table of learned (or fixed) positions, BART, Marian,
    Pegasus, has `max_position_embeddings` of them, the decoder's start token included, and past it `generate`
    fails with an IndexError; T5's relative positions have no such end (None)."""
    positions = getattr(config, "max_position_embeddings", None)
    return positions - 1 if isinstance(positions, int) and positions > 1 else None


def default_new_tokens(config: Any) -> int | None:
    """How many new tokens a request that names none gets from a generation config (None: no bound of its own)."""
    if config.max_new_tokens is not None:
        return int(config.max_new_tokens)
    return int(config.max_length) - 1 if config.max_length else None


class TorchSeq2Seq:
    """One loaded `AutoModelForSeq2SeqLM`; `generate` must run on one thread at a time (the scheduler's)."""

    def __init__(self, model: Any, tokenizer: Any, task: str) -> None:
        self._torch = import_torch()
        self.model = model
        self.config = model.config
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (model.config.pad_token_id or 0)
        config = pipeline_generation_config(model)
        extra = task_params(model.config, task)
        extra.pop("prefix", None)
        if extra:
            config.update(**extra)
        if config.pad_token_id is None and tokenizer.pad_token_id is not None:
            config.pad_token_id = tokenizer.pad_token_id
        self.generation_config = config
        self.memory_bytes = module_bytes(model)  # weights; `generate` keeps no cache between calls
        self.max_new_tokens = decoder_room(model.config)

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """EOS tokens as `generate` reads them here: this generator's config first, the model's otherwise."""
        return eos_ids(self)

    @classmethod
    def load(cls, source: ModelSource, model_config: ModelConfig, tokenizer: Any, task: str, threads: int = 0) -> TorchSeq2Seq:
        torch = import_torch()
        import transformers

        torch.set_num_threads(threads or available_cpus())
        kwargs: dict[str, Any] = {
            "trust_remote_code": model_config.trust_remote_code,
            "dtype": torch.float32,
            "use_safetensors": not model_config.allow_pickle or None,
        }
        model = pretrained(transformers.AutoModelForSeq2SeqLM, source.path, **kwargs).eval()
        return cls(model, tokenizer, task)

    def generate(
        self,
        input_ids: list[list[int]],
        params: Seq2SeqParams,
        on_token: Callable[[int], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> list[list[int]]:
        """Each input's generated tokens (decoder start token included, as the pipeline decodes them).

        For one streamed input, `on_token` sees each new token as it is chosen, and `stop` (polled after
        every step) ends generation early, when its reader has gone.
        """
        torch = self._torch
        longest = max(len(ids) for ids in input_ids)
        ids = torch.full((len(input_ids), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(input_ids), longest), dtype=torch.long)
        for row, seq in enumerate(input_ids):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        hooks: dict[str, Any] = {}
        if on_token is not None:
            hooks["streamer"] = _TokenStreamer(on_token)
        if stop is not None:
            hooks["stopping_criteria"] = _stopping(stop)
        kwargs = params.generate_kwargs()
        if self.max_new_tokens is not None and "max_new_tokens" not in kwargs:  # a default past the positions' end
            kwargs["max_new_tokens"] = min(default_new_tokens(self.generation_config) or self.max_new_tokens,
                                           self.max_new_tokens)
        # `generate` samples from torch's global generator: seed it inside a fork of its state, so a request's
        # seed never fixes other clients' draws, and an unseeded request still draws fresh ones.
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(params.seed if params.seed is not None else random.getrandbits(63))
            out = self.model.generate(
                input_ids=ids, attention_mask=mask, generation_config=self.generation_config, **kwargs, **hooks
            )
        return out.tolist()

    def warmup(self) -> None:
        self.generate([[self.pad_id, self.pad_id]], Seq2SeqParams(max_new_tokens=2))

    def close(self) -> None:
        self.model = None


class _TokenStreamer:
    """transformers' streamer interface: `put` gets the decoder's start ids first, then each new token."""

    def __init__(self, on_token: Callable[[int], None]) -> None:
        self._on_token = on_token
        self._started = False

    def put(self, value: Any) -> None:
        if not self._started:  # the decoder start token(s), not generated
            self._started = True
            return
        self._on_token(int(value.reshape(-1)[0]))

    def end(self) -> None:
        pass


def _stopping(stop: Callable[[], bool]) -> Any:
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Stop(StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            torch = import_torch()
            return torch.full((input_ids.shape[0],), stop(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([Stop()])

