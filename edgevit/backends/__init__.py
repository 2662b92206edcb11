"""Runtimes edgevit lowers to. Each backend implements ``base.Backend`` and registers by name."""
from .base import Backend, LoweredArtifact, OpSummary, StageProgress, get_backend, list_backends
from . import executorch, litert  # noqa: F401,E402  (registers "executorch", "litert")

__all__ = ["Backend", "LoweredArtifact", "OpSummary", "StageProgress", "get_backend", "list_backends"]
