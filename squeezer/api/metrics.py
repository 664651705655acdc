"""Prometheus metrics, kept in a registry per app (never the global one), served at GET /metrics.

Counters and histograms are observed as requests and batches happen; queue depth, cache and model figures
are read from the engine at scrape time, so they cannot drift from the truth.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from squeezer.engine import Engine, Timings
from squeezer.scheduling import BatchStats
from squeezer.scheduling.decode_request import SequenceStats, StepStats

router = APIRouter()

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)


class EngineCollector(Collector):
    """Figures read from the engine when Prometheus scrapes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        if self.engine.registry is None:
            return
        stats = self.engine.stats()
        depth = GaugeMetricFamily("squeezer_queue_depth", "Sequences waiting for the model", labels=["model"])
        waiting = GaugeMetricFamily("squeezer_generation_waiting", "Generation requests waiting for a slot", labels=["model"])
        occupancy = GaugeMetricFamily("squeezer_generation_occupancy", "Share of decode slots in use", labels=["model"])
        for model_id, figures in stats.items():
            depth.add_metric([model_id], figures.queue_depth)
            if figures.occupancy is not None:  # a decode loop: its queue holds requests waiting for a slot
                waiting.add_metric([model_id], figures.queue_depth)
                occupancy.add_metric([model_id], figures.occupancy)
        yield depth
        yield waiting
        yield occupancy
        loaded = GaugeMetricFamily("squeezer_models_loaded", "Models ready to serve")
        loaded.add_metric([], len(stats))
        yield loaded
        hits = CounterMetricFamily("squeezer_cache_hits", "Cache hits", labels=["cache"])
        misses = CounterMetricFamily("squeezer_cache_misses", "Cache misses", labels=["cache"])
        hits.add_metric(["result"], self.engine.results.hits)
        misses.add_metric(["result"], self.engine.results.misses)
        for cache, counts in (("tokens", [f.token_cache for f in stats.values()]), ("prefix", [f.prefix_cache for f in stats.values()])):
            hits.add_metric([cache], sum(c.hits for c in counts if c is not None))
            misses.add_metric([cache], sum(c.misses for c in counts if c is not None))
        yield hits
        yield misses
        reused = CounterMetricFamily("squeezer_prefix_cache_tokens", "Prompt tokens taken from the prefix cache, not prefilled")
        reused.add_metric([], sum(f.prefix_tokens_reused for f in stats.values()))
        yield reused


class Metrics:
    """The app's metrics: request counts and latencies by phase, batch sizes, plus the engine's figures."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("squeezer_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        self.errors = Counter("squeezer_request_errors", "HTTP error responses", ["status"], registry=self.registry)
        self.latency = Histogram(
            "squeezer_request_duration_seconds", "Inference request time by phase", ["phase"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram("squeezer_batch_size", "Sequences per batch", ["model"], buckets=SIZE_BUCKETS, registry=self.registry)
        self.batch_tokens = Histogram(
            "squeezer_batch_tokens", "Padded tokens per batch", ["model"], buckets=TOKEN_BUCKETS, registry=self.registry
        )
        self.time_to_first_token = Histogram(
            "squeezer_time_to_first_token_seconds", "Generation: arrival to first token", ["model"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.time_per_output_token = Histogram(
            "squeezer_time_per_output_token_seconds", "Generation: time per token after the first", ["model"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.generated_tokens = Counter("squeezer_generated_tokens", "Tokens generated", ["model"], registry=self.registry)
        self.step_sequences = Histogram(
            "squeezer_decode_batch_sequences", "Sequences per decode step (batch occupancy)", ["model"],
            buckets=SIZE_BUCKETS, registry=self.registry,
        )
        self.registry.register(EngineCollector(engine))
        engine.hooks.on_batch = self.observe_batch
        engine.hooks.on_step = self.observe_step
        engine.hooks.on_finish = self.observe_sequence

    def observe_batch(self, model_id: str, stats: BatchStats) -> None:
        self.batch_size.labels(model_id).observe(stats.size)
        self.batch_tokens.labels(model_id).observe(stats.padded_tokens)

    def observe_step(self, model_id: str, stats: StepStats) -> None:
        self.step_sequences.labels(model_id).observe(stats.sequences)

    def observe_sequence(self, model_id: str, stats: SequenceStats) -> None:
        self.generated_tokens.labels(model_id).inc(stats.generated_tokens)
        if stats.generated_tokens:
            self.time_to_first_token.labels(model_id).observe(stats.time_to_first_token)
        if stats.generated_tokens > 1:
            self.time_per_output_token.labels(model_id).observe(stats.time_per_output_token)

    def observe_request(self, route: str, status: int) -> None:
        self.requests.labels(route, str(status)).inc()
        if status >= 400:
            self.errors.labels(str(status)).inc()

    def observe_timings(self, timings: Timings) -> None:
        for phase in ("queue", "tokenize", "inference", "total"):
            self.latency.labels(phase).observe(getattr(timings, phase))


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format; open like /health, since it carries no request content."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
