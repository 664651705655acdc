"""The systems a user would pick instead, found on this machine or reported missing with how to install each
(in its own environment, so their dependencies cannot change squeezer's): a missing peer is never silently dropped."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass


@dataclass(frozen=True)
class Peer:
    name: str
    workloads: tuple[str, ...]
    module: str | None  # importable module that marks it installed, or
    executable: str | None  # a command on PATH
    install: str

    def installed(self) -> bool:
        if self.executable:
            return shutil.which(self.executable) is not None
        return self.module is not None and importlib.util.find_spec(self.module) is not None


EMBED, CHAT = ("embed-short", "embed-batch", "classify"), ("chat", "chat-json")
PEERS = (
    Peer("infinity-emb", EMBED, None, "infinity_emb", "python -m venv ~/infinity && ~/infinity/bin/pip install 'infinity-emb[all]'"),
    Peer("llama-server", CHAT, None, "llama-server",
         "build llama.cpp (cmake -B build -DGGML_NATIVE=OFF -DGGML_AVX2=ON && cmake --build build -t llama-server)"),
    Peer("llama-cpp-python", CHAT, "llama_cpp", None, "python -m venv ~/llamacpp && ~/llamacpp/bin/pip install 'llama-cpp-python[server]'"),
    Peer("onnxruntime-genai", CHAT, "onnxruntime_genai", None, "pip install onnxruntime-genai (in its own environment)"),
    Peer("openvino-genai", CHAT, "openvino_genai", None, "pip install openvino-genai (in its own environment; Intel CPUs)"),
)


def peer_status(workloads: list[str]) -> list[dict[str, str]]:
    """Each peer for the workloads being run: installed or missing, and how to install it."""
    found = []
    for peer in PEERS:
        if set(peer.workloads) & set(workloads):
            state = "installed; not driven by this version yet" if peer.installed() else "missing"
            found.append({"name": peer.name, "state": state, "install": peer.install})
    return found
