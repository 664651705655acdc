"""Squeezer: an accelerated inference server for Hugging Face Transformers models.

The public API is the engine (usable without HTTP) and the configs; the HTTP app is `squeezer.api.create_app`.
"""

from squeezer.config import BackendConfig, BatchingConfig, ModelConfig, ServeConfig, ServerConfig
from squeezer.engine import Engine

__all__ = ["BackendConfig", "BatchingConfig", "Engine", "ModelConfig", "ServeConfig", "ServerConfig"]
__version__ = "0.1.0"
