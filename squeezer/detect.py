"""Work out what a model folder is for and how it wants its inputs, from its own files.

Sources of truth, most specific first: the README's `pipeline_tag`, sentence-transformers module files,
then the architecture class name in config.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from squeezer.tasks import ALL_TASKS, Pooling

if TYPE_CHECKING:
    from squeezer.sources import ModelSource

# Architecture class-name suffix -> task; looked up in order, first match wins.
ARCHITECTURE_TASKS: tuple[tuple[str, str], ...] = (
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForMaskedLM", "fill-mask"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("Model", "feature-extraction"),
)

# Encoder-decoder model types whose `*ForConditionalGeneration` serves text2text-generation by default
# (a README `pipeline_tag` of summarization or translation, or --task, says otherwise); Marian translates.
SEQ2SEQ_MODEL_TYPES = frozenset({"t5", "mt5", "bart", "mbart", "pegasus"})
TRANSLATION_MODEL_TYPES = frozenset({"marian"})

_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_lasttoken": "lasttoken",
}


def readme_pipeline_tag(folder: Path) -> str | None:
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    head = readme.read_text(encoding="utf-8", errors="replace")[:20_000]
    match = re.search(r"^---\s*$(.*?)^---\s*$", head, re.S | re.M)
    if not match:
        return None
    tag = re.search(r"^pipeline_tag:\s*['\"]?([\w-]+)", match.group(1), re.M)
    return tag.group(1) if tag else None


def sentence_transformers_modules(folder: Path) -> list[dict[str, Any]]:
    path = folder / "modules.json"
    return json.loads(path.read_text()) if path.is_file() else []


def detect_task(folder: Path, config: Any, gguf: bool = False) -> str:
    """The task a model serves by default (a GGUF file holds a causal LM)."""
    if gguf:
        return "text-generation"
    tag = readme_pipeline_tag(folder)
    if tag == "sentence-similarity" or sentence_transformers_modules(folder):
        return "feature-extraction"  # sentence-similarity requests are recognised by their shape
    if tag in ALL_TASKS:
        return tag
    model_type = getattr(config, "model_type", None)
    architectures = getattr(config, "architectures", None) or []
    if model_type in TRANSLATION_MODEL_TYPES:
        return "translation"
    if model_type in SEQ2SEQ_MODEL_TYPES and any(a.endswith("ForConditionalGeneration") for a in architectures):
        return "text2text-generation"
    for arch in getattr(config, "architectures", None) or []:
        for suffix, task in ARCHITECTURE_TASKS:
            if arch.endswith(suffix):
                return task
    raise ValueError(
        f"cannot tell which task {folder} is for (architectures: {getattr(config, 'architectures', None)}); "
        f"pass --task with one of {', '.join(sorted(ALL_TASKS))}"
    )


def configured_task(source: ModelSource, forced: str | None = None) -> str | None:
    """The task a source will serve, read from its small files without loading it (an artifact's report,
    `--task`, the README and config.json), so a request can be routed to a model before it loads and after it
    unloads; None when its files do not say (its load then fails and says why)."""
    if source.artifact:
        from squeezer.artifact import ArtifactError, read_report

        try:
            return str(read_report(source.path)["task"])
        except (ArtifactError, OSError, KeyError):
            return None
    if forced or source.gguf_file:
        return forced or "text-generation"
    try:
        config = json.loads((source.path / "config.json").read_text())
        return detect_task(source.path, SimpleNamespace(**config))
    except (OSError, ValueError, TypeError):
        return None


def detect_pooling(folder: Path) -> Pooling | None:
    """The sentence-transformers pooling and normalization a model folder declares, if any."""
    modules = sentence_transformers_modules(folder)
    pooling_dirs = [m["path"] for m in modules if m.get("type", "").endswith(".Pooling")]
    if not pooling_dirs:
        return None
    cfg = json.loads((folder / pooling_dirs[0] / "config.json").read_text())
    modes = [mode for key, mode in _POOLING_KEYS.items() if cfg.get(key)]
    unsupported = [m["type"] for m in modules if not m.get("type", "").endswith((".Transformer", ".Pooling", ".Normalize"))]
    if len(modes) != 1 or unsupported:
        raise ValueError(
            f"{folder}: unsupported sentence-transformers layout (pooling modes {modes}, modules {unsupported}); "
            "serve it with --task feature-extraction on a folder without modules.json for token embeddings"
        )
    normalize = any(m.get("type", "").endswith(".Normalize") for m in modules)
    return Pooling(modes[0], normalize)


def sentence_max_length(folder: Path) -> int | None:
    path = folder / "sentence_bert_config.json"
    return json.loads(path.read_text()).get("max_seq_length") if path.is_file() else None


def max_length(folder: Path, config: Any, tokenizer: Any) -> int:
    """The longest input the model accepts, in tokens: the tightest of what its files declare."""
    limits = [n for n in (sentence_max_length(folder), getattr(tokenizer, "model_max_length", None)) if n]
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        # RoBERTa-style models offset positions by padding_idx + 1, so two positions are never usable.
        offset = (config.pad_token_id or 0) + 1 if config.model_type in {"roberta", "xlm-roberta", "camembert"} else 0
        limits.append(positions - offset)
    sane = [int(n) for n in limits if n < 1_000_000]
    return min(sane) if sane else 512
