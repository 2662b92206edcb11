"""Measuring artifacts: ``bench`` (every backend x precision side by side on this machine) and ``profile``
(per-op profiles on a device, see ``profile.py``; where they run, ``via/``).

Imports are lazy so that ``import edgevit.profiling`` stays cheap for the commands that need only a part.
"""
__all__ = ["BenchOptions", "BenchRow", "run_bench"]


def __getattr__(name: str):
    if name in __all__:
        from . import bench
        return getattr(bench, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
