"""LiteRT / TFLite backend (litert-torch to convert, ai-edge-litert to run)."""
from .backend import LiteRTBackend

__all__ = ["LiteRTBackend"]
