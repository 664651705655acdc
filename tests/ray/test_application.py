"""The application builder for `serve` config files, and the deployment it makes: built here without a cluster
(building needs none), from the repository's example config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from squeezer.config import ConfigError
from squeezer.ray_serve import app_builder
from squeezer.ray_serve.application import config_from_args, deployment_options

pytestmark = pytest.mark.ray

EXAMPLE = Path(__file__).parents[2] / "examples" / "ray-serve.yaml"


def test_the_example_config_builds_an_autoscaled_application() -> None:
    from ray.serve import Application

    (spec,) = yaml.safe_load(EXAMPLE.read_text())["applications"]
    assert spec["import_path"] == "squeezer.ray_serve:app_builder"
    application = app_builder(spec["args"])
    assert isinstance(application, Application)
    deployment = application._bound_deployment
    scaling = deployment._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.max_replicas, scaling.target_ongoing_requests) == (1, 4, 16)
    assert deployment.ray_actor_options["num_cpus"] == 2
    sources, config = deployment.init_args
    assert [s.model_id for s in sources] == ["sentence-transformers/all-MiniLM-L6-v2"]
    assert config.backend.threads == 2 and config.batching.max_batch_size == 64
    assert not config.model.optimize_in_background  # replicas never compile: artifacts are built once, before


def test_args_are_checked_like_flags() -> None:
    with pytest.raises(ConfigError, match="unknown settings.*max_batch"):
        config_from_args({"max_batch": 3})
    with pytest.raises(ConfigError, match="--autoscale"):
        config_from_args({"autoscale": "4:1"})
    specs, config = config_from_args({"models": "a=/x b=/y", "replicas": 3})
    assert specs == ["a=/x", "b=/y"] and config.cluster.replicas == 3


def test_autoscaling_delays_and_window_reach_ray() -> None:
    """Ray's own defaults unless set; a short window also makes replicas report sooner (a third of it)."""
    _, default = config_from_args({"autoscale": "1:2"})
    scaling = deployment_options(default)["autoscaling_config"]
    assert (scaling["upscale_delay_s"], scaling["downscale_delay_s"], scaling["look_back_period_s"]) == (30, 600, 30)
    assert scaling["metrics_interval_s"] == 10  # Ray's default: no deprecated setting passed on
    _, quick = config_from_args({"autoscale": "1:2", "upscale_delay": 1, "downscale_delay": 2, "autoscale_window": 3})
    scaling = deployment_options(quick)["autoscaling_config"]
    assert (scaling["upscale_delay_s"], scaling["downscale_delay_s"], scaling["look_back_period_s"]) == (1, 2, 3)
    assert scaling["metrics_interval_s"] == 1
    with pytest.raises(ConfigError, match="--downscale-delay"):
        config_from_args({"downscale_delay": -1})
