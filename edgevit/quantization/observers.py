"""Activation observers a recipe can choose, all torchao PT2E observers.

torchao offers min-max, moving-average min-max and the histogram observer (whose range minimises the
L2 quantization error over its histogram: the "MSE" choice). It has no percentile observer, so
:class:`PercentileObserver` is the one addition: a :class:`HistogramObserver` that keeps the same
running histogram and only replaces the range search with percentiles of it (no second histogram, no
hand-written statistics).
"""
from __future__ import annotations

import torch
from torchao.quantization.pt2e import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver

from ..errors import UnknownNameError

__all__ = ["OBSERVERS", "PercentileObserver", "activation_observer", "check_observer"]


class PercentileObserver(HistogramObserver):
    """Clip the activation range to the [100 - p, p] percentiles of the observed values."""

    def __init__(self, percentile: float = 99.99, **kwargs):
        super().__init__(**kwargs)
        self.percentile = percentile

    @torch.jit.export
    def calculate_qparams(self):
        if self.min_val == float("inf") or self.histogram.sum() == 0:
            return super().calculate_qparams()  # uninitialised: torchao's default and warning
        cdf = torch.cumsum(self.histogram, 0) / self.histogram.sum()
        tail = (100.0 - self.percentile) / 100.0
        lo_bin = int(torch.searchsorted(cdf, torch.tensor(tail)))
        hi_bin = int(torch.searchsorted(cdf, torch.tensor(1.0 - tail)))
        width = (self.max_val - self.min_val) / self.bins
        return self._calculate_qparams(self.min_val + width * lo_bin, self.min_val + width * (hi_bin + 1))

    def extra_repr(self) -> str:
        return f"percentile={self.percentile}, " + super().extra_repr()


# name -> (observer class, what it does). Moving average is fed one image per call (see
# ``calibration_batch``): it averages per-image extremes, which is what the observer is designed for.
OBSERVERS = {
    "minmax": (MinMaxObserver, "running min/max of every value seen"),
    "moving-average": (MovingAverageMinMaxObserver, "exponential moving average of per-image min/max"),
    "percentile": (PercentileObserver, "99.99th percentiles of torchao's running histogram"),
    "histogram": (HistogramObserver, "range minimising the L2 (MSE) quantization error over a histogram"),
}


def check_observer(name: str) -> str:
    if name not in OBSERVERS:
        raise UnknownNameError("observer", name, OBSERVERS)
    return name


def activation_observer(name: str, num_calib: int, eps: float):
    """An observer constructor (``cls.with_args(...)``) for activations."""
    cls, _ = OBSERVERS[check_observer(name)]
    if name == "moving-average":
        # An EMA whose span is the calibration set (torchao's 0.01 would barely leave the first image).
        return cls.with_args(averaging_constant=2.0 / (num_calib + 1), eps=eps)
    return cls.with_args(eps=eps)
