"""The compile pipeline (``edgevit compile``) and what runs on its artifacts here (eval, quant-report, qat)."""
from .metrics import DEFAULT_THRESHOLDS, Agreement, Thresholds, compare_outputs
from .pipeline import CompileOptions, CompileResult, choose_backend, compile_model

__all__ = ["DEFAULT_THRESHOLDS", "Agreement", "Thresholds", "compare_outputs", "CompileOptions", "CompileResult",
           "choose_backend", "compile_model"]
