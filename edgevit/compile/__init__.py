"""The compile pipeline (``edgevit compile``)."""
from .metrics import Agreement, Thresholds, compare_outputs
from .pipeline import CompileOptions, CompileResult, SilentProgress, choose_backend, compile_model

__all__ = ["Agreement", "Thresholds", "compare_outputs", "CompileOptions", "CompileResult", "SilentProgress",
           "choose_backend", "compile_model"]
