"""The KubeRay example (examples/kuberay-rayservice.yaml) cannot rot: its serveConfigV2 builds the application (as
`serve deploy` would on the cluster KubeRay makes), holds the same application as examples/ray-serve.yaml, and its
pods are sized by docs/scaling.md's rule. Built here without a cluster or Kubernetes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from squeezer.ray_serve import app_builder

pytestmark = pytest.mark.ray

EXAMPLES = Path(__file__).parents[2] / "examples"


def cpus(quantity: str | int | float) -> float:
    """A Kubernetes CPU quantity ("4", 4, "500m") in CPUs."""
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def container(group: dict[str, Any]) -> dict[str, Any]:
    (only,) = group["template"]["spec"]["containers"]
    return only


def test_the_rayservice_builds_the_example_application_on_pods_sized_for_it() -> None:
    manifest = yaml.safe_load((EXAMPLES / "kuberay-rayservice.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    (spec,) = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"]  # a YAML document in a string
    (reference,) = yaml.safe_load((EXAMPLES / "ray-serve.yaml").read_text())["applications"]
    assert spec == reference  # one application, whichever way it is deployed

    deployment = app_builder(spec["args"])._bound_deployment
    scaling = deployment._deployment_config.autoscaling_config
    replica_cpus = deployment.ray_actor_options["num_cpus"]
    _, config = deployment.init_args
    threads = config.backend.threads

    cluster = manifest["spec"]["rayClusterConfig"]
    head, (workers,) = cluster["headGroupSpec"], cluster["workerGroupSpecs"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # replicas run on workers only
    assert cluster["enableInTreeAutoscaling"] is True  # pods follow the replicas autoscaling asks for
    resources = container(workers)["resources"]
    pod_cpus = cpus(resources["limits"]["cpu"])  # what Ray counts on the pod
    assert cpus(resources["requests"]["cpu"]) == pod_cpus  # what Kubernetes reserves for it: all of them
    per_pod = int(pod_cpus // replica_cpus)
    assert per_pod >= 1 and threads * per_pod <= pod_cpus  # threads per replica x replicas per pod <= cores
    assert workers["maxReplicas"] * per_pod >= scaling.max_replicas  # autoscaling's maximum fits
    assert workers["minReplicas"] * per_pod >= scaling.min_replicas
    assert container(head)["image"] == container(workers)["image"]  # one Ray and one Squeezer on every pod
