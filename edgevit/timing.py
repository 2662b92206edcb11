"""Timing statistics shared by ``bench``, ``profile`` and the mixed-precision search: one definition each.

Latencies on a shared machine are noisy, so every comparison is made *side by side*: candidates are
timed round-robin (each round runs every candidate once), and summarised by the median and the p90.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable, Mapping

__all__ = ["p90", "summarize", "time_round_robin"]


def p90(times: list[float]) -> float:
    """The 90th percentile by nearest rank: the sorted sample at index round(0.9 * (n - 1))."""
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


def summarize(times: list[float]) -> dict:
    """runs, min, median, p90, mean and the times themselves (ms, rounded to 0.1 µs)."""
    return {"runs": len(times), "min": min(times), "median": statistics.median(times), "p90": p90(times),
            "mean": statistics.fmean(times), "times": [round(t, 4) for t in times]}


def time_round_robin(runners: Mapping[Hashable, Callable], example, rounds: int,
                     warmup: int) -> dict[Hashable, list[float]]:
    """Milliseconds per call for each runner; every round calls each runner once, in order."""
    import torch

    times: dict = {k: [] for k in runners}
    with torch.no_grad():
        for _ in range(warmup):
            for run in runners.values():
                run(example)
        for _ in range(rounds):
            for key, run in runners.items():
                start = time.perf_counter()
                run(example)
                times[key].append((time.perf_counter() - start) * 1e3)
    return times
