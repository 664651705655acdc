"""Tiny random-weight encoder-decoders (T5, BART, Marian) built at test time, with tokenizers trained here.

T5 and BART get byte-level BPE (fast) tokenizers; Marian gets what real opus-mt checkpoints ship, SentencePiece
models (source.spm, target.spm) and a vocab.json, which only transformers' slow MarianTokenizer reads.

The T5 one declares `task_specific_params` with the prefixes the real T5 checkpoints carry ("summarize: ",
"translate English to French: "), so the tests cover the pipeline's prefix behaviour. Both tokenizers cap
inputs at MAX_INPUT tokens (BART's positions agree), so truncation is easy to reach. Weights are seeded and
large, so greedy paths are peaked and every run builds the same models.
"""

from __future__ import annotations

from pathlib import Path

from squeezer.testing.tiny_decoders import CORPUS

ARCHS = ("t5", "bart", "marian")
MAX_INPUT = 64
SUMMARIZE_PREFIX = "summarize: "
TRANSLATE_PREFIX = "translate English to French: "


def _marian_tokenizer(folder: Path) -> object:
    """SentencePiece trained on the corpus, the same model for both sides, as in opus-mt checkpoints."""
    import json

    import sentencepiece as spm
    from transformers import MarianTokenizer

    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 3) + "\n")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "spm"), vocab_size=100, hard_vocab_limit=False,
                                   character_coverage=1.0, model_type="unigram", bos_id=-1, eos_id=1, unk_id=0,
                                   pad_id=-1, minloglevel=2)
    corpus.unlink()
    model = (folder / "spm.model").read_bytes()
    for name in ("source.spm", "target.spm"):
        (folder / name).write_bytes(model)
    proc = spm.SentencePieceProcessor(model_file=str(folder / "spm.model"))
    vocab = {proc.id_to_piece(i): i for i in range(proc.get_piece_size())}
    vocab["<pad>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    for name in ("spm.model", "spm.vocab"):
        (folder / name).unlink()
    tok = MarianTokenizer(str(folder / "source.spm"), str(folder / "target.spm"), str(folder / "vocab.json"),
                          model_max_length=MAX_INPUT)
    tok.save_pretrained(folder)
    return tok


def _tokenizer(arch: str, folder: Path) -> object:
    if arch == "marian":
        return _marian_tokenizer(folder)
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"] if arch == "t5" else ["<s>", "<pad>", "</s>", "<unk>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS + [SUMMARIZE_PREFIX, TRANSLATE_PREFIX] * 5, vocab_size=400, min_frequency=2, special_tokens=specials)
    ids = {t: bpe.token_to_id(t) for t in specials}
    if arch == "t5":
        bpe._tokenizer.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", ids["</s>"])])
        tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    else:
        bpe._tokenizer.post_processor = TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", ids["<s>"]), ("</s>", ids["</s>"])]
        )
        tok = PreTrainedTokenizerFast(
            tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
        )
    tok.model_max_length = MAX_INPUT
    tok.save_pretrained(folder)
    return tok


def _config(arch: str, tok: object) -> object:
    import transformers

    vocab = len(tok)  # type: ignore[arg-type]
    pad, eos = tok.pad_token_id, tok.eos_token_id  # type: ignore[attr-defined]
    if arch == "t5":
        return transformers.T5Config(
            vocab_size=vocab,
            d_model=64,
            d_kv=16,
            d_ff=128,
            num_layers=2,
            num_heads=4,
            pad_token_id=pad,
            eos_token_id=eos,
            decoder_start_token_id=pad,
            task_specific_params={
                "summarization": {"prefix": SUMMARIZE_PREFIX},
                "translation_en_to_fr": {"prefix": TRANSLATE_PREFIX},
            },
        )
    # BART and Marian share one config layout: the same tiny sizes, EOS forced at the end.
    sizes = dict(
        vocab_size=vocab, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=MAX_INPUT,
        pad_token_id=pad, eos_token_id=eos, forced_eos_token_id=eos,
    )
    if arch == "marian":
        return transformers.MarianConfig(**sizes, decoder_start_token_id=pad)
    return transformers.BartConfig(**sizes, bos_token_id=tok.bos_token_id, decoder_start_token_id=eos)  # type: ignore[attr-defined]


def build(arch: str, folder: Path, pipeline_tag: str | None = None) -> Path:
    """Write a tiny random `arch` encoder-decoder ("t5", "bart" or "marian") and its tokenizer into `folder`."""
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(arch, folder)
    torch.manual_seed(0)
    model = transformers.AutoModelForSeq2SeqLM.from_config(_config(arch, tok))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.5)
    model.save_pretrained(folder)
    if pipeline_tag:
        (folder / "README.md").write_text(f"---\npipeline_tag: {pipeline_tag}\n---\n# tiny\n")
    return folder
