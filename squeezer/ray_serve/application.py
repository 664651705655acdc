"""The Ray Serve application: the replica class as a deployment, with its replica count or autoscaling, CPUs and
request bounds taken from `ClusterConfig`, for the CLI (`squeezer serve --ray`) and for `serve` config files
(`app_builder`).

Replicas get model sources, never specs to re-resolve or compile: whatever the driver prepared (an artifact from
`--optimize`) is what every replica loads.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from squeezer.config import SERVE_GROUPS, ClusterConfig, ConfigError, ServeConfig, from_sources
from squeezer.detect import configured_task
from squeezer.ray_serve.install import require_ray
from squeezer.runtime import capabilities_for
from squeezer.sources import DEFAULT_MODEL_SPEC, ModelSource, resolve

DEPLOYMENT = "squeezer"
METRICS_INTERVAL = 10.0  # seconds: Ray's default metrics_interval_s (see autoscaling_config)


def replica_config(config: ServeConfig) -> ServeConfig:
    """The configuration each replica serves with: `--threads 0` becomes the replica's CPUs (not the node's
    cores, which its neighbours share), and no compile runs in a replica (see `prepared`)."""
    cluster = config.cluster
    threads = config.backend.threads or max(1, math.floor(cluster.replica_cpus))
    return dataclasses.replace(
        config,
        backend=dataclasses.replace(config.backend, threads=threads),
        model=dataclasses.replace(config.model, optimize=False, optimize_in_background=False),
    )


def deployment_options(config: ServeConfig) -> dict[str, Any]:
    """Ray Serve's options for the deployment: a fixed replica count, or autoscaling on ongoing requests."""
    cluster = config.cluster
    options: dict[str, Any] = {
        "name": DEPLOYMENT,
        "max_ongoing_requests": cluster.max_ongoing_requests,  # the batcher needs many requests at once
        "ray_actor_options": {"num_cpus": cluster.replica_cpus},
        "graceful_shutdown_timeout_s": config.server.shutdown_grace,
        "health_check_period_s": 5.0,
    }
    scaling = autoscaling_config(cluster)
    if scaling is None:
        options["num_replicas"] = cluster.replicas
    else:
        options["autoscaling_config"] = scaling
    return options


def autoscaling_config(cluster: ClusterConfig) -> dict[str, Any] | None:
    """Ray Serve's autoscaling_config for `--autoscale MIN:MAX`, or None for a fixed count. Ray averages ongoing
    requests over the window (look_back_period_s) but hears of them only every metrics_interval_s (10 s by
    default): a shorter window would average one stale report, so the load is reported every third of the window
    when that is sooner, and the default window keeps Ray's default interval."""
    bounds = cluster.autoscale_bounds()
    if bounds is None:
        return None
    return {
        "min_replicas": bounds[0],
        "max_replicas": bounds[1],
        "initial_replicas": max(bounds[0], 1),
        "target_ongoing_requests": cluster.target_ongoing_requests,
        "upscale_delay_s": cluster.upscale_delay,
        "downscale_delay_s": cluster.downscale_delay,
        "look_back_period_s": cluster.autoscale_window,
        "metrics_interval_s": min(METRICS_INTERVAL, cluster.autoscale_window / 3),
    }


def build(sources: Sequence[ModelSource], config: ServeConfig) -> Any:
    """The application to `serve.run`: replicas of the whole API, or (with `models_per_replica`) a router in front
    of multiplexed model replicas."""
    _, serve = require_ray()
    if config.cluster.models_per_replica:
        return build_multiplexed(sources, config)
    from squeezer.ray_serve.replica import SqueezerReplica

    deployment = serve.deployment(serve.ingress()(SqueezerReplica), **deployment_options(config))
    return deployment.bind(list(sources), replica_config(config))


def build_multiplexed(sources: Sequence[ModelSource], config: ServeConfig) -> Any:
    """The router (no CPU of its own) bound to the multiplexed model replicas (squeezer.ray_serve.multiplex)."""
    from squeezer.ray_serve.multiplex import model_deployment, router_deployment

    capabilities = {s.model_id: capabilities_for(configured_task(s, config.model.task)) for s in sources}
    models = model_deployment(config.cluster.models_per_replica).options(**deployment_options(config))
    router = router_deployment().options(name="router", max_ongoing_requests=config.cluster.max_ongoing_requests * 4,
                                         ray_actor_options={"num_cpus": 0})
    return router.bind(models.bind(list(sources), replica_config(config)), capabilities)


def config_from_args(args: dict[str, Any]) -> tuple[list[str], ServeConfig]:
    """MODEL specs and the configuration from a config file's `args`: `models` (a list or a space-separated
    string) and any `squeezer serve` setting by its field name (`max_batch_size: 32`); unset ones come from the
    environment (SQUEEZER_*), then defaults."""
    values = dict(args)
    models = values.pop("models", [])
    specs = models.split() if isinstance(models, str) else [str(m) for m in models]
    known = {f.name for cls in SERVE_GROUPS.values() for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown settings in the application's args: {', '.join(unknown)}")
    groups = {name: from_sources(cls, {f.name: values.get(f.name) for f in dataclasses.fields(cls)})
              for name, cls in SERVE_GROUPS.items()}
    return specs, ServeConfig(**groups)


def app_builder(args: dict[str, Any]) -> Any:
    """For `serve run` / `serve deploy` config files (`import_path: squeezer.ray_serve:app_builder`). Models are
    served as found: to serve a compiled artifact, run `squeezer optimize` once and name its folder."""
    specs, config = config_from_args(args)
    return build([resolve(spec) for spec in specs or [DEFAULT_MODEL_SPEC]], config)
