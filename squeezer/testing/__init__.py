"""Helpers for testing and benchmarking squeezer, importable by its tests, its benchmarks and its users.

- `server`: a real `squeezer serve` process on a free loopback port (`ServerProcess`, `free_port`) and
  `metric`, one sample read from a Prometheus exposition;
- `tiny_encoders`, `tiny_decoders`, `tiny_seq2seq`: tiny random-weight models (encoders, causal LMs,
  encoder-decoders) with real tokenizers, built in seconds into a folder, seeded so every run builds the
  same ones; `tiny_decoders` also holds the transformers reference for generation and the SmolLM2 GGUF fetch.

Like `starlette.testclient`, this package ships with the library but serving code never imports it. Importing
it costs nothing: torch, transformers and httpx are imported by the submodules (the model builders import
torch and transformers inside their functions), never here.
"""
