"""Measure this machine's XNNPACK peaks once: a large GEMM per precision and a weight-streaming GEMV.

The ``host`` profile cannot carry published figures (it is whatever machine runs edgevit), so the
uncalibrated latency model takes them from here: the best of a few runs of one big linear layer lowered
through the same ExecuTorch/XNNPACK path as every artifact, timed in the profiler's runner, one thread.
"""
from __future__ import annotations

import platform
import time

import torch
from torch import nn

from ...progress import SilentProgress
from .runner import run_pte

__all__ = ["measure_host_peaks"]

GEMM = (256, 1024, 1024)   # M, K, N: 268 M MACs, compute-bound on any CPU
GEMV = (1, 4096, 4096)     # 64 MB of fp32 weights read once: memory-bound


def _best_ms(backend, layer: nn.Module, x: torch.Tensor, precision: str, threads: int, repeats: int) -> float:
    """Lower ``layer`` like any artifact and time it in the profiler's runner (best of ``repeats``)."""
    calibration = torch.randn(2, *x.shape[1:]) if precision == "int8" else None
    lowered = backend.lower(layer.eval(), x, precision, calibration, SilentProgress())
    return min(run_pte(lowered.data, runs=repeats, warmup=2, threads=threads).times_ms)


@torch.no_grad()
def measure_host_peaks(backend, threads: int = 1, repeats: int = 10) -> dict:
    """{"peak_gmacs_per_s": {"fp32": .., "int8": ..}, "bandwidth_gbps": .., ...} for this machine."""
    torch.manual_seed(0)
    m, k, n = GEMM
    peaks = {}
    for precision in ("fp32", "int8"):
        ms = _best_ms(backend, nn.Linear(k, n), torch.randn(1, m, k), precision, threads, repeats)
        peaks[precision] = round(m * k * n / (ms * 1e-3) / 1e9, 1)
    _, k, n = GEMV
    ms = _best_ms(backend, nn.Linear(k, n), torch.randn(1, 1, k), "fp32", threads, repeats)
    bandwidth = round(k * n * 4 / (ms * 1e-3) / 1e9, 1)
    return {"peak_gmacs_per_s": peaks, "bandwidth_gbps": bandwidth, "basis": "measured",
            "formula": f"best of {repeats}: XNNPACK linear {GEMM[0]}x{GEMM[1]} @ {GEMM[1]}x{GEMM[2]} (MAC/s), "
                       f"fp32 GEMV over a {GEMV[1]}x{GEMV[2]} weight (bytes/s), {threads} thread(s)",
            "machine": platform.processor() or platform.machine(), "threads": threads,
            "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
