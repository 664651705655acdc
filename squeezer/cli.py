"""The `squeezer` command. Its flags are generated from the config dataclasses' fields, and every flag has
an environment variable of the same name (`--max-payload-bytes` <-> `SQUEEZER_MAX_PAYLOAD_BYTES`)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from squeezer.benchmark.cli import add_bench_parser
from squeezer.compiler.cli import add_optimize_parser
from squeezer.config import SERVE_GROUPS, ConfigError, ServeConfig, env_name
from squeezer.flags import add_config_arguments, config_from_args
from squeezer.sources import SourceError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squeezer", description="Accelerated inference server for Transformers models.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="Serve one or more models over HTTP.")
    serve.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="[ID=]SOURCE: a model folder, a .gguf file, package:NAME (a model inside a Python package) or a cached Hub id "
        f"(default: the packaged all-MiniLM-L6-v2; env {env_name('models')}, space-separated)",
    )
    for cls in SERVE_GROUPS.values():
        add_config_arguments(serve.add_argument_group(cls.__name__, cls.__doc__), cls)
    serve.set_defaults(handler=serve_command)
    add_optimize_parser(commands)
    add_bench_parser(commands)
    return parser


def serve_config(args: argparse.Namespace) -> ServeConfig:
    """Every group of the serving configuration, from its flags, then environment variables, then defaults."""
    return ServeConfig(**{name: config_from_args(cls, args) for name, cls in SERVE_GROUPS.items()})


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from squeezer.api import create_app
    from squeezer.api.stopping import GracefulServer
    from squeezer.api.protocol import bounded_protocol
    from squeezer.engine import Engine

    config = serve_config(args)
    server = config.server
    logging.basicConfig(level=server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    specs = args.models or os.environ.get(env_name("models"), "").split()
    prepare = None
    if config.model.optimize or (config.model.optimize_in_background and not config.cluster.ray):  # serving never imports the compiler: the CLI does
        from squeezer.compiler.serving import optimizer

        prepare = optimizer(config.model)
    if config.cluster.ray:  # compiled once here (--optimize), then shared by every replica
        from squeezer.ray_serve.runner import serve_on_ray

        return serve_on_ray(specs, config, prepare)
    app = create_app(Engine.from_specs(specs, config, prepare))
    # uvicorn drains on SIGTERM, then re-raises the signal to the previous handler; make that a no-op so a
    # graceful shutdown exits 0, as process managers expect.
    signal.signal(signal.SIGTERM, lambda *_: None)
    listen = uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        log_level=server.log_level,
        access_log=False,  # squeezer.api.access logs one structured line per request instead
        timeout_graceful_shutdown=int(server.shutdown_grace),
        http=bounded_protocol(server.read_timeout),  # a request's head bounded in size and time
    )
    GracefulServer(listen, app.state.stopping).run()
    if app.state.unfinished:  # worker threads (a compile, a generate) would hold the interpreter's exit
        logging.shutdown()
        os._exit(0)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (ConfigError, SourceError, ValueError) as exc:
        print(f"squeezer: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
