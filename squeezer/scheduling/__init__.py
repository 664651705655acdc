"""Scheduling: how work items reach a backend (dynamic batching for encoders)."""

from squeezer.scheduling.batcher import Batcher, BatchStats, Submitted, WorkItem

__all__ = ["Batcher", "BatchStats", "Submitted", "WorkItem"]
