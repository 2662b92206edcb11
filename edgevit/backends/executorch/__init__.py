"""ExecuTorch backend (XNNPACK delegate)."""
from .backend import ExecuTorchBackend, summarize_ops
from .runtime import capture_native_stderr, load_program

__all__ = ["ExecuTorchBackend", "summarize_ops", "load_program", "capture_native_stderr"]
