"""Command-line flags generated from config dataclasses: one flag per field, help and env name included.

Shared by `squeezer serve` and `squeezer optimize`, so every command derives its flags the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

from squeezer.config import env_name, field_types, flag_name, from_sources

C = TypeVar("C")


def add_config_arguments(parser: argparse.ArgumentParser | Any, cls: type) -> None:
    """One flag per field; defaults stay None so `config_from_args` can tell "not given" from a value."""
    kinds = field_types(cls)
    for f in dataclasses.fields(cls):
        help_text = f"{f.metadata['help']} [env {env_name(f.name)}; default {f.default!r}]"
        if kinds[f.name] is bool:
            # argparse reads any "--no-" spelling as False, so a field named no_x could never be switched on
            if f.name.startswith("no_"):
                raise TypeError(f"{cls.__name__}.{f.name}: name the positive setting; --no-{f.name[3:]} comes for free")
            parser.add_argument(flag_name(f.name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag_name(f.name), type=kinds[f.name], choices=f.metadata.get("choices"), help=help_text)


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """The config built from parsed flags, then environment variables, then defaults."""
    values = vars(args)
    return from_sources(cls, {f.name: values.get(f.name) for f in dataclasses.fields(cls)})  # type: ignore[arg-type]
