"""The systems a user would pick instead of squeezer, as data: how each is found, how its server is launched and
spoken to, and how to install it (in its own environment, so its dependencies cannot change squeezer's).

A peer is found as an executable on PATH, a module importable here, or a path given with `--peer NAME=PATH` (an
executable in the peer's own environment); `--peer NAME='COMMAND {port} ...'` gives a whole command instead, so
any OpenAI-compatible server can stand beside the rungs. Server peers are driven (squeezer.benchmark.peer_server)
as rows of the ladder's tables, by the same load generator in the same interleaved rounds; in-process libraries
are reported with why they are not; a peer that is missing is reported missing with how to install it, never
silently dropped.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, replace
from typing import Any

# Tokens of context per llama.cpp slot: the longest chat prompt with its template is under 100 tokens, and
# chat-json's answer at most 150: 512 holds one request with room to spare, so no slot ever shifts its context.
SLOT_CONTEXT = 512
# What a command template may name; peer_server fills each in (see Launch).
PLACEHOLDERS = ("exe", "python", "model", "gguf", "port", "threads", "slots", "context", "slot_context")
OPENAI_ROUTES = {"embed-short": "/v1/embeddings", "embed-batch": "/v1/embeddings",
                 "chat": "/v1/chat/completions", "chat-json": "/v1/chat/completions"}
CHAT_ROUTES = {name: path for name, path in OPENAI_ROUTES.items() if name.startswith("chat")}
EMBED, CHAT = ("embed-short", "embed-batch", "classify"), ("chat", "chat-json")
QUANTIZED = ("llama.cpp computes on the GGUF's quantized weights, where transformers and squeezer dequantize them "
             "to float, so its greedy text may part from theirs: its agreement says how often it does not")


@dataclass(frozen=True)
class Launch:
    """How a server peer is started and spoken to.

    `command` and `env` are templates, one argument per item, filled with {exe} (the executable found or given),
    {python} (this interpreter), {model} (the model's files: its folder, or its .gguf file), {gguf} (the .gguf
    file: a peer naming it is skipped for a model that is not one), {port}, {threads} (the count squeezer's
    backends take: the cores this process may use), {slots} (the sweep's most clients: a slot each, at every
    level), {context} (slots x SLOT_CONTEXT tokens) and {slot_context} (SLOT_CONTEXT).
    """

    command: tuple[str, ...]
    routes: dict[str, str]  # workload name -> the path its requests go to
    description: str
    ready: str = "/health"  # GET here answers 200 once the model is loaded
    env: dict[str, str] = field(default_factory=dict)
    prompt_cache: str = "none"  # what it reuses across chat requests, stated beside squeezer's in the report
    note: str = ""  # what a reader needs to read its figures right
    dialect: str = "openai"  # how its bodies and answers are shaped (squeezer.benchmark.routes.DIALECTS)


@dataclass(frozen=True)
class Peer:
    name: str
    workloads: tuple[str, ...]  # the workloads it is an alternative for: it is listed wherever one of them runs
    install: str
    executable: str | None = None  # a command on PATH that marks it installed, or
    module: str | None = None  # a module importable here (then run by this interpreter)
    launch: Launch | None = None  # None: a library with no server of its own, reported with `why`
    why: str = ""
    check: tuple[str, ...] = ()  # a command template that must succeed for an executable given with --peer


PEERS = (
    Peer("infinity-emb", EMBED, "python -m venv ~/infinity && ~/infinity/bin/pip install 'infinity-emb[all]'; "
         "then --peer infinity-emb=~/infinity/bin/infinity_emb", executable="infinity_emb",
         launch=Launch(("{exe}", "v2", "--model-id", "{model}", "--served-model-name", "bench", "--host", "127.0.0.1",
                        "--port", "{port}", "--engine", "torch", "--device", "cpu", "--log-level", "warning"),
                       {"embed-short": "/embeddings", "embed-batch": "/embeddings"},
                       "infinity-emb's server (torch engine, its own dynamic batching) on the model's folder",
                       env={"OMP_NUM_THREADS": "{threads}", "MKL_NUM_THREADS": "{threads}"})),
    Peer("llama-server", CHAT, "build llama.cpp with the CPU's features named (cmake -B build -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON "
         "-DGGML_F16C=ON, plus -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON where the CPU has them: "
         "a GGML_NATIVE build has crashed at start on AMX machines; cmake --build build -t llama-server); "
         "then --peer llama-server=build/bin/llama-server", executable="llama-server",
         launch=Launch(("{exe}", "-m", "{gguf}", "--host", "127.0.0.1", "--port", "{port}", "-t", "{threads}", "-tb",
                        "{threads}", "-np", "{slots}", "-c", "{context}", "--cont-batching", "--jinja", "--alias", "bench"),
                       CHAT_ROUTES, "llama.cpp's server on the same GGUF, continuous batching, a slot per client "
                       "(separate KV streams: an idle slot costs memory, not time), the GGUF's own chat template",
                       prompt_cache="its defaults: cache_prompt (a slot reuses the prefix its last prompt shares with "
                       "the next) and, in builds that have it, --cache-ram (idle slots' prompts kept in host memory)",
                       note=QUANTIZED)),
    Peer("llama-cpp-python", CHAT, "python -m venv ~/llamacpp && ~/llamacpp/bin/pip install 'llama-cpp-python[server]'; "
         "then --peer llama-cpp-python=~/llamacpp/bin/python", module="llama_cpp",
         check=("{exe}", "-c", "import llama_cpp.server"),
         launch=Launch(("{exe}", "-m", "llama_cpp.server", "--model", "{gguf}", "--host", "127.0.0.1", "--port", "{port}",
                        "--n_threads", "{threads}", "--n_threads_batch", "{threads}", "--n_ctx", "{slot_context}",
                        "--model_alias", "bench", "--interrupt_requests", "False"),
                       CHAT_ROUTES, "llama-cpp-python's OpenAI server on the same GGUF: one request at a time (it has "
                       "no batching), later ones waiting (not interrupting: --interrupt_requests False)",
                       ready="/v1/models", prompt_cache="reuses the prefix its last prompt shares with the next (one "
                       "context); its --cache is off, as by default", note=QUANTIZED, dialect="llama-cpp-python")),
    Peer("onnxruntime-genai", CHAT, "pip install onnxruntime-genai (in its own environment)", module="onnxruntime_genai",
         why="a library with no server of its own: a server written for it here would be measured along with it; "
         "`python -m bench.bench_generation --genai-model DIR` times it in-process"),
    Peer("openvino-genai", CHAT, "pip install openvino-genai (in its own environment; Intel CPUs)", module="openvino_genai",
         why="a library with no server of its own (OpenVINO Model Server is its server): a server written for it "
         "here would be measured along with it"),
)
KNOWN = {peer.name: peer for peer in PEERS}


@dataclass(frozen=True)
class Found:
    """A peer as this run finds it: the executable that runs it, or None and why it is missing."""

    peer: Peer
    exe: str | None
    reason: str

    def routes(self, workloads: list[str]) -> list[str]:
        """The workloads of this run it is driven on."""
        return [w for w in workloads if self.peer.launch and w in self.peer.launch.routes]


def parse(given: list[str]) -> dict[str, str]:
    """`--peer NAME=PATH` or `--peer NAME=COMMAND` flags as {name: value}; ValueError for a malformed one."""
    found: dict[str, str] = {}
    for flag in given:
        name, sep, value = flag.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"--peer {flag!r}: expected NAME=PATH (an executable) or NAME='COMMAND {{port}} ...'")
        found[name.strip()] = os.path.expanduser(value.strip())
    return found


def from_flag(name: str, value: str) -> Peer:
    """The peer a --peer flag names. A value with a `{placeholder}` is a whole command: it replaces a known peer's
    command (keeping its routes), or makes any OpenAI-compatible server a peer under a new name."""
    if "{" not in value:
        if name not in KNOWN:
            raise ValueError(f"--peer {name}={value}: unknown peer {name!r} (known: {', '.join(KNOWN)}); a server of "
                             f"your own is given as a whole command: --peer {name}='COMMAND --port {{port}} ...'")
        return KNOWN[name]
    command = tuple(shlex.split(value))
    try:
        [part.format(**{key: "" for key in PLACEHOLDERS}) for part in command]
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"--peer {name}: the command may name {', '.join('{' + p + '}' for p in PLACEHOLDERS)} "
                         f"only ({exc!r})") from None
    if name in KNOWN:
        known = KNOWN[name]
        if known.launch is None:
            raise ValueError(f"--peer {name}: {known.why.split(':')[0]}; it takes no command")
        return replace(known, launch=replace(known.launch, command=command), check=())
    return Peer(name, tuple(OPENAI_ROUTES), "given with --peer", launch=Launch(
        command, OPENAI_ROUTES, "a server given by its command, spoken to in OpenAI's dialect",
        prompt_cache="not known (a server given by its command)"))


def find(peer: Peer, given: str | None) -> Found:
    """Where `peer` runs from: the path or command given with --peer, else its executable on PATH or its module
    here; None, with the reason, where it cannot be found."""
    if given is not None:
        exe = given if "{" not in given else shlex.split(given)[0].replace("{python}", sys.executable)
        missing = _runnable(exe)
        if missing is None and peer.check:
            missing = _checked([part.format(exe=exe) for part in peer.check])
        return Found(peer, None if missing else exe, missing or f"given: {exe}")
    if peer.executable:
        exe = shutil.which(peer.executable)
        return Found(peer, exe, f"on PATH: {exe}" if exe else f"{peer.executable} is not on PATH (or give --peer {peer.name}=PATH)")
    if peer.module and importlib.util.find_spec(peer.module) is not None:
        return Found(peer, sys.executable, f"{peer.module} importable here")
    return Found(peer, None, f"{peer.module} is not importable here (or give --peer {peer.name}=PATH)")


def _runnable(exe: str) -> str | None:
    """Why `exe` cannot be run, or None: a path must be an executable file, a bare name a command on PATH."""
    if os.sep not in exe:
        return None if shutil.which(exe) else f"{exe}: not on PATH"
    if not os.path.exists(exe):
        return f"{exe}: no such file"
    return None if os.path.isfile(exe) and os.access(exe, os.X_OK) else f"{exe}: not an executable file"


def _checked(cmd: list[str]) -> str | None:
    """Why `cmd` failed (its last line), or None."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{shlex.join(cmd)}: {exc}"
    said = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
    return None if done.returncode == 0 else f"{shlex.join(cmd)} failed: {said[-1] if said else done.returncode}"


def plan(workloads: list[str], given: dict[str, str]) -> tuple[list[Found], list[dict[str, Any]]]:
    """The peers to drive in this run, and every peer's line for the results: each peer listed for one of
    `workloads`, and each given with --peer whatever its workloads, as driven, missing or not driven, and why."""
    peers = [from_flag(name, value) for name, value in given.items() if name not in KNOWN or "{" in value]
    chosen = {p.name: p for p in (*PEERS, *peers)}
    driven: list[Found] = []
    status = []
    for peer in chosen.values():
        if not set(peer.workloads) & set(workloads) and peer.name not in given:
            continue
        found = find(peer, given.get(peer.name))
        runs = found.routes(workloads)
        if found.exe is None:
            state, reason = "missing", found.reason
        elif peer.launch is None:
            state, reason = "not driven", f"{found.reason}; {peer.why}"
        elif not runs:
            state, reason = "not driven", (f"{found.reason}; it is driven on {', '.join(peer.launch.routes)}, "
                                           f"this run has {', '.join(workloads)}")
        else:
            state, reason = "driven", found.reason
            driven.append(found)
        status.append({"name": peer.name, "state": state, "reason": reason, "install": peer.install})
    return driven, status
