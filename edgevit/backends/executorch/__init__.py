"""ExecuTorch backend (XNNPACK delegate): ``backend.py`` is the class; lowering, runtime, profiling (runner,
ETDump, XNNPACK op mapping) and the cost replay each have their module."""
from .backend import ExecuTorchBackend

__all__ = ["ExecuTorchBackend"]
