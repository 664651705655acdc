"""Scheduling: how work items reach a backend (dynamic batching for encoders)."""

from squeezer.scheduling.batcher import Batcher, BatchStats, WorkItem

__all__ = ["Batcher", "BatchStats", "WorkItem"]
