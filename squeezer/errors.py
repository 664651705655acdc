"""Errors a client can cause, each carrying the HTTP status it is answered with.

The engine and tasks raise these; the API turns them into `{"error": ...}` JSON without knowing which
layer raised them, so nothing a client sends can become a 500.
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """A request the server refuses; `status` is the HTTP status, `extra` more JSON fields."""

    status: int = 400

    def __init__(self, message: str, status: int | None = None, **extra: Any) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.extra = extra


class UnknownModelError(ClientError):
    status = 404


class ModelNotReadyError(ClientError):
    """The model is loading (503 with an estimated time, as the Inference API answers) or failed to load."""

    status = 503


UNLOADING = "this model is being unloaded; retry to load it again"  # what work refused by a draining model hears


def worker_stopped(exc: BaseException) -> ModelNotReadyError:
    """What requests hear when a model's worker thread was ended from outside (see the schedulers)."""
    return ModelNotReadyError(f"this model's worker thread stopped ({type(exc).__name__}); unload and load it again")


class QueueFullError(ClientError):
    status = 429


def error_text(exc: BaseException, hide: str | None = None) -> str:
    """`Type: message` for /info and 503 answers, with the folder `hide` (a source's parent) cut from paths,
    so the server's file layout stays private unless --show-paths."""
    text = f"{exc.__class__.__name__}: {exc}"
    return text.replace(hide.rstrip("/") + "/", "") if hide else text
