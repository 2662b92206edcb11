"""Measuring artifacts: ``bench`` (every backend x precision side by side on this machine)."""
from .bench import BenchOptions, BenchRow, run_bench

__all__ = ["BenchOptions", "BenchRow", "run_bench"]
