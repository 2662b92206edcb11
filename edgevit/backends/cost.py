"""What a backend's cost replay hands to ``edgevit estimate``: one work item per operator its runtime runs.

A backend that can be estimated implements :class:`CostReplay` (``Backend.cost_replay()``): it replays its
own lowering over a captured graph (fusions, layouts, which ops run in int8) into :class:`WorkItem`s, and
maps its profiler's event names onto the same operator kinds, so ``edgevit calibrate`` can pair measured
events with predicted items. Pricing the items (``edgevit.estimate.model``) is backend-independent.

Kinds (``CATEGORIES``) follow XNNPACK's operator kinds, which both CPU runtimes here share: ``gemm`` (Fully
Connected, also 1x1 convolutions), ``igemm`` (other convolutions), ``dwconv``, ``bmm``, ``binary``,
``unary``, ``math`` (float transcendental: GELU, sigmoid, ...), ``softmax``, ``reduce``, ``pool``,
``transpose``, ``copy`` (slice, concat, pad, resize), ``reshape`` and ``convert`` (quantize/dequantize);
``portable`` is an operator the delegate does not take, run by the runtime's own (portable) kernel; one
on the path between delegated operators splits them into separate delegate calls (``ModelWork.partitions``).
"""
from __future__ import annotations

import abc
from collections import Counter
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

__all__ = ["CATEGORIES", "CostReplay", "ModelWork", "WorkItem"]

CATEGORIES = ("gemm", "igemm", "dwconv", "bmm", "binary", "unary", "math", "softmax", "reduce", "pool",
              "transpose", "copy", "reshape", "convert", "portable")


@dataclass(frozen=True)
class WorkItem:
    category: str               # operator kind (see CATEGORIES)
    precision: str              # what the kernel computes in: int8, fp16 or fp32
    macs: int                   # multiply-accumulates (elements for data movement / elementwise ops)
    bytes: int                  # activations in + weights + activations out, at the kernel's precision
    stage: str                  # the model stage it belongs to ("stem", "stages.2", "head", ...)
    op: str                     # the aten op(s) it comes from, e.g. "conv2d+relu"
    gemm: tuple[int, int, int, int] | None = None   # (batch, M, N, K) of gemm/igemm/bmm: what tiles act on
    weight_bytes: int = 0       # the GEMM's streamed operand (weights; bmm's B)
    rows: int = 0               # softmax / reductions: the rows they loop over (their cost is per row)
    partition: int = 0          # which delegate call it runs in: how many delegated -> outside steps precede it


@dataclass
class ModelWork:
    model: str
    input_shape: tuple[int, ...]
    precision: str
    items: list[WorkItem] = field(default_factory=list)

    def counts(self) -> Counter:
        return Counter(i.category for i in self.items)

    def outside(self) -> int:
        """Operators left outside the delegate (portable kernels)."""
        return sum(i.category == "portable" for i in self.items)

    def partitions(self) -> int:
        """Delegate calls per inference. Delegated operators with the same number of delegated -> outside
        steps behind them can run in one call (no path between them leaves the delegate); ops outside
        that only read constants (a bias table gathered once per run) split nothing."""
        return len({i.partition for i in self.items if i.category != "portable"})

    def as_dict(self) -> dict:
        return {"model": self.model, "input_shape": list(self.input_shape), "precision": self.precision,
                "items": [asdict(i) for i in self.items]}


class CostReplay(abc.ABC):
    """A backend's lowering, replayed for pricing."""

    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")

    @abc.abstractmethod
    def model_work(self, deployed: nn.Module, example: torch.Tensor, precision: str, name: str) -> ModelWork:
        """The operators the runtime will run for ``deployed`` (deploy form) at ``example``'s shape."""

    @abc.abstractmethod
    def event_category(self, event_name: str) -> str | None:
        """The kind of a profiler event (one of CATEGORIES); None for events that are not operators."""

    def measure_peaks(self, threads: int = 1, repeats: int = 10) -> dict:
        """This machine's peak MAC/s per precision and bandwidth, measured through the backend."""
        raise NotImplementedError
