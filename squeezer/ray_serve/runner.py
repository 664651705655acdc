"""`squeezer serve --ray`: deploy the API on a local Ray instance (started here) or on the cluster at
--ray-address, then hold it until SIGINT or SIGTERM, and take it down again.

A compile (`--optimize`) runs once, here, before anything is deployed: every replica loads the same artifact
folder instead of optimizing its own (on a multi-node cluster that folder must be on storage every node sees).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence

from squeezer.config import ServeConfig
from squeezer.ray_serve.install import require_ray
from squeezer.ray_serve.application import DEPLOYMENT, build
from squeezer.runtime import Prepare
from squeezer.sources import DEFAULT_MODEL_SPEC, ModelSource, resolve

log = logging.getLogger("squeezer.ray_serve")


def prepared(specs: Sequence[str], prepare: Prepare | None) -> list[ModelSource]:
    """The sources every replica loads: resolved here, and compiled here when the CLI passes the compile step."""
    sources = [resolve(spec) for spec in specs or [DEFAULT_MODEL_SPEC]]
    return [prepare(source) for source in sources] if prepare is not None else sources


def stop_on_signal() -> threading.Event:
    """An event SIGINT or SIGTERM sets; installed before deploying, so a signal during the deploy is not lost."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def serve_on_ray(specs: Sequence[str], config: ServeConfig, prepare: Prepare | None = None) -> int:
    """Deploy, serve until a signal, shut down; a deployment that fails (a model that does not load) returns 1
    with Ray's account of why."""
    ray, serve = require_ray()
    stop = stop_on_signal()
    sources = prepared(specs, prepare)
    server, cluster = config.server, config.cluster
    ray.init(address=cluster.ray_address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        serve.start(http_options={"host": server.host, "port": server.port})
        serve.run(build(sources, config), name=DEPLOYMENT, route_prefix="/")
        log.info("serving %s on Ray at http://%s:%d", ", ".join(s.model_id for s in sources), server.host, server.port)
        while not stop.wait(1.0):
            pass
        return 0
    except RuntimeError as exc:  # serve.run's "deployment failed", with the replicas' errors
        log.error("the Ray Serve deployment failed: %s", exc)
        return 1
    finally:
        if cluster.ray_address:  # someone else's cluster: take down this application only
            serve.delete(DEPLOYMENT)
        else:
            serve.shutdown()
        ray.shutdown()
