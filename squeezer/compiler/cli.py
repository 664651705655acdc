"""`squeezer optimize SOURCE --out DIR [...]`: flags generated from `OptimizeConfig`'s fields.

`squeezer.cli` wires `add_optimize_parser` and `run_optimize` into the main command; nothing here imports
it (it imports this module), and torch and onnxruntime are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import Any

from squeezer.compiler.config import OptimizeConfig
from squeezer.config import ConfigError
from squeezer.flags import add_config_arguments, config_from_args


def add_optimize_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `optimize` subcommand to a `parser.add_subparsers()` object; returns its parser."""
    from squeezer.compiler.recipes import all_recipes

    epilog = "recipes (decoder-*: causal LMs, for text-generation):\n" + "\n".join(
        f"  {r.name:34s} {'/'.join(r.targets):9s} {r.sweep:8s} {r.note}" for r in all_recipes()
    )
    parser = subparsers.add_parser(
        "optimize", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog,
        help="Compile a model into a fast, validated ONNX artifact for this machine.",
        description="Export, fuse and quantize a model, gate every candidate against PyTorch on a validation set, "
        "time the survivors here, and write the fastest into DIR with its report (squeezer.json).",
    )
    parser.add_argument("source", metavar="SOURCE", help="[ID=]SOURCE: a model folder, a .gguf file, package:NAME or a cached Hub id")
    parser.add_argument("--out", required=True, metavar="DIR", help="Artifact folder to write (replaced atomically).")
    parser.add_argument("--quiet", action="store_true", help="Print only the final table, not the progress.")
    add_config_arguments(parser, OptimizeConfig)
    parser.set_defaults(handler=run_optimize)
    return parser


class Printer:
    """Progress on stderr, one line per step, with the time since the start."""

    def __init__(self, quiet: bool) -> None:
        self.start, self.quiet = time.monotonic(), quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.start:6.1f}s] {message}", file=sys.stderr, flush=True)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # so `finally` blocks remove the half-built artifact


def run_optimize(args: argparse.Namespace) -> int:
    """Run the command; prints the report table on stdout. Exit 0 on success, 2 on a usage or model error."""
    from squeezer.artifact import ArtifactError
    from squeezer.compiler.export import ExportError
    from squeezer.compiler.optimize import optimize
    from squeezer.compiler.select import NoCandidateError
    from squeezer.sources import SourceError

    main_thread = threading.current_thread() is threading.main_thread()  # signals can only be handled there
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        report = optimize(args.source, args.out, config_from_args(OptimizeConfig, args), Printer(args.quiet))
    except (ConfigError, SourceError, ExportError, ArtifactError, NoCandidateError, ValueError, RuntimeError) as exc:
        print(f"squeezer optimize: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("squeezer optimize: interrupted; nothing was written", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk (or a file-size limit) while writing: the staging folder is already gone
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"squeezer optimize: error: cannot write{where}: {exc.strerror or exc}; nothing was written", file=sys.stderr)
        return 1
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    print(report.table())
    print(f"artifact: {report.path}")
    return 0

