"""Config validation and the CLI/environment mapping derived from the same fields."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from squeezer.cli import build_parser, serve_config
from squeezer.compiler.config import OptimizeConfig
from squeezer.config import (
    SERVE_GROUPS, BackendConfig, BatchingConfig, ConfigError, ModelConfig, ServerConfig, field_types, flag_name, from_sources,
)
from squeezer.flags import add_config_arguments, config_from_args


def test_invalid_values_say_which_setting_to_change() -> None:
    with pytest.raises(ConfigError, match=r"--port \(SQUEEZER_PORT\): must be between 0 and 65535"):
        ServerConfig(port=70000)
    with pytest.raises(ConfigError, match=r"--task \(SQUEEZER_TASK\): unknown task 'translate-poems'"):
        ModelConfig(task="translate-poems")
    with pytest.raises(ConfigError, match=r"--optimize-profile \(SQUEEZER_OPTIMIZE_PROFILE\): must be latency or throughput"):
        ModelConfig(optimize_profile="fast")
    with pytest.raises(ConfigError, match="--max-batch-size"):
        BatchingConfig(max_batch_size=0)
    with pytest.raises(ConfigError, match="--threads"):
        BackendConfig(threads=-1)


def test_environment_fills_what_the_command_line_leaves_out() -> None:
    env = {"SQUEEZER_PORT": "9001", "SQUEEZER_HOST": "0.0.0.0", "SQUEEZER_MAX_PAYLOAD_BYTES": "10"}
    config = from_sources(ServerConfig, {"port": 9002}, env)
    assert (config.host, config.port, config.max_payload_bytes) == ("0.0.0.0", 9002, 10)
    assert from_sources(ModelConfig, {}, {"SQUEEZER_ALLOW_PICKLE": "true"}).allow_pickle is True


def test_bad_environment_values_are_reported() -> None:
    with pytest.raises(ConfigError, match="SQUEEZER_PORT.*not an integer"):
        from_sources(ServerConfig, {}, {"SQUEEZER_PORT": "eighty"})
    with pytest.raises(ConfigError, match="SQUEEZER_ALLOW_PICKLE.*not a boolean"):
        from_sources(ModelConfig, {}, {"SQUEEZER_ALLOW_PICKLE": "perhaps"})


def test_every_config_field_has_a_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SQUEEZER_PORT", raising=False)
    args = build_parser().parse_args(
        ["serve", "m=/x", "--port", "8100", "--allow-pickle", "--max-batch-tokens", "512", "--task", "fill-mask", "--threads", "1"]
    )
    config = serve_config(args)
    assert args.models == ["m=/x"]
    assert config.server.port == 8100
    assert config.model.allow_pickle and config.model.task == "fill-mask"
    assert config.batching.max_batch_tokens == 512
    assert config.backend.threads == 1


def bool_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if field_types(cls)[f.name] is bool]


@pytest.mark.parametrize("command, classes", [(["serve"], list(SERVE_GROUPS.values())), (["optimize", "/x", "--out", "/y"], [OptimizeConfig])])
def test_every_boolean_flag_means_what_it_says_both_ways(command: list[str], classes: list[type]) -> None:
    """`--x` switches a setting on and `--no-x` off; argparse reads every "--no-" spelling as False, so a field
    once named `no_cache` made `optimize --no-cache` read the cache after all."""
    parser = build_parser()
    for cls in classes:
        for name in bool_fields(cls):
            flag = flag_name(name)
            on = config_from_args(cls, parser.parse_args([*command, flag]))
            off = config_from_args(cls, parser.parse_args([*command, "--no-" + flag[2:]]))
            assert (getattr(on, name), getattr(off, name)) == (True, False), flag
    assert config_from_args(OptimizeConfig, parser.parse_args(["optimize", "/x", "--out", "/y", "--no-cache"])).cache is False


def test_a_negative_boolean_field_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class Negative:
        no_color: bool = dataclasses.field(default=False, metadata={"help": "no colour"})

    with pytest.raises(TypeError, match="name the positive setting"):
        add_config_arguments(argparse.ArgumentParser(), Negative)
