"""Mixed precision under an accuracy budget: ``edgevit compile ... --max-drop X [--eval DIR]``.

Start from the full int8 artifact. If its drop (top-1 points vs the fp32 eager model on ``--eval``
labelled images, or, without labels, 100 - top-1 agreement with fp32 in points) exceeds X, leave the
most sensitive layers (conv, linear, add, mul: quantization/layers.py) in fp32: the quantizer does
not annotate them, so XNNPACK runs them
in fp32 inside the same delegate. How many: the eager fake-quant graph (sensitivity.py) estimates the
drop for any set of fp32 layers in milliseconds, a bisection over the sensitivity ranking finds the
fewest that meet X by that estimate, and then the candidate is lowered and measured in the real
runtime; while the measured drop still exceeds X, more layers go to fp32 (up to all of them): the
estimate keeps an edge int8 while any int8 op touches it, as the lowered graph does, but only the
measurement decides. Every
number in the manifest is measured on a lowered artifact; the latencies of the int8 and the mixed
artifact are timed here, round-robin, in one run.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from ..backends import Backend, LoweredArtifact, StageProgress
from ..errors import EdgevitError
from ..quantization import QuantRecipe
from ..quantization.sensitivity import FakeQuantGraph
from ..timing import time_round_robin
from .batched import run_batched

__all__ = ["DropMetric", "search_mixed_precision"]


@dataclass
class DropMetric:
    """How far an artifact's predictions are from the fp32 model's, in points."""

    inputs: torch.Tensor
    labels: torch.Tensor | None      # None: the agreement proxy
    reference_logits: torch.Tensor   # fp32 eager on ``inputs``
    source: str

    @property
    def name(self) -> str:
        return "top1_drop" if self.labels is not None else "top1_disagreement"

    def drop(self, logits: torch.Tensor) -> float:
        if self.labels is None:
            return float((logits.argmax(1) != self.reference_logits.argmax(1)).double().mean() * 100)
        ref = (self.reference_logits.argmax(1) == self.labels).double().mean()
        return float((ref - (logits.argmax(1) == self.labels).double().mean()) * 100)


def _latencies(backend: Backend, artifacts: dict[str, bytes], example: torch.Tensor, threads: int) -> dict[str, float]:
    runners = {k: backend.load(data, threads=threads) for k, data in artifacts.items()}
    times = time_round_robin(runners, example, rounds=30, warmup=5)
    return {k: round(statistics.median(v), 4) for k, v in times.items()}


def search_mixed_precision(backend: Backend, deployed: torch.nn.Module, example: torch.Tensor, recipe: QuantRecipe,
                           calibration: torch.Tensor, int8: LoweredArtifact, metric: DropMetric, max_drop: float,
                           progress: StageProgress, threads: int = 1) -> tuple[LoweredArtifact, dict]:
    """The artifact to ship (``int8`` itself when it meets the budget) and the manifest's
    ``mixed_precision`` block. Raises EdgevitError when even every layer in fp32 misses ``max_drop``."""
    batch = example.shape[0]

    def measure(lowered: LoweredArtifact) -> float:
        return metric.drop(run_batched(backend.load(lowered.data, threads=threads), metric.inputs, batch))

    with progress.stage("measuring the int8 artifact"):
        int8_drop = measure(int8)
    block = {"max_drop": max_drop, "metric": metric.name, "eval_source": metric.source,
             "eval_images": len(metric.inputs), "drop_int8": round(int8_drop, 4)}
    if int8_drop <= max_drop:
        return int8, {**block, "measured_drop": round(int8_drop, 4), "layers_fp32": [],
                      "note": "full int8 meets the budget; no layer left in fp32"}

    with progress.stage("per-layer sensitivity (eager fake-quant)"):
        graph = FakeQuantGraph(deployed, example, backend.quantizer(recipe), calibration,
                               recipe.calibration_batch)
        chosen = list(recipe.fp32_layers)  # the user's --fp32-layer choices stay fp32 in every candidate
        ranking = [name for name in graph.sensitivity(calibration).ranking() if name not in chosen]
        usable = graph.usable(metric.inputs)
        estimate_metric = DropMetric(metric.inputs[:usable], None if metric.labels is None else metric.labels[:usable],
                                     metric.reference_logits[:usable], metric.source)

    def estimate(k: int) -> float:
        return estimate_metric.drop(graph.run(metric.inputs, fp32_layers=chosen + ranking[:k]))

    lo, hi = 0, len(ranking)  # fewest fp32 layers meeting the estimate: in (lo, hi]
    with progress.stage("choosing fp32 layers (eager estimate)"):
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if estimate(mid) <= max_drop else (mid, hi)
    trials, best = [], None
    k = hi
    while True:
        layers = chosen + ranking[:k]
        with progress.stage(f"lowering with {k} fp32 layer{'s' * (k != 1)}"):
            lowered = backend.lower(deployed, example, "int8", calibration, progress,
                                    recipe=recipe.with_fp32_layers(layers))
            drop = measure(lowered)
        trials.append({"fp32_layers": k, "measured_drop": round(drop, 4)})
        if best is None or drop < best[1]:
            best = (k, drop)
        if drop <= max_drop:
            break
        if k == len(ranking):
            raise EdgevitError(
                f"--max-drop {max_drop:g} cannot be met: full int8 loses {int8_drop:.2f} points "
                f"({metric.name} on {len(metric.inputs)} images from {metric.source}), and even with all "
                f"{len(chosen) + len(ranking)} layers (conv, linear, add, mul) in fp32 it loses {drop:.2f} (the best "
                f"reached: {best[1]:.2f} points, with {len(chosen) + best[0]} layers in fp32); concatenation and "
                "pooling stay int8. Nothing was written. Raise --max-drop, "
                "compile with --precision fp32, or see `edgevit quant-report` for where the loss is.")
        k = min(len(ranking), max(k + 1, k * 2))
    with progress.stage("timing int8 vs mixed (round-robin)"):
        latency = _latencies(backend, {"int8": int8.data, "mixed": lowered.data}, example, threads)
    return lowered, {**block, "measured_drop": round(drop, 4), "layers_fp32": layers,
                     "latency_ms_int8": latency["int8"], "latency_ms_mixed": latency["mixed"],
                     "latency_note": f"median of 30 round-robin rounds here, {threads} thread(s)",
                     "trials": trials, "sensitivity_ranking": ranking}
