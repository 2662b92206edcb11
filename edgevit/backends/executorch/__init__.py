"""ExecuTorch backend (XNNPACK delegate)."""
from .backend import ExecuTorchBackend, summarize_ops
from .runtime import load_program

__all__ = ["ExecuTorchBackend", "summarize_ops", "load_program"]
