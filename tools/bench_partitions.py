#!/usr/bin/env python
"""`edgevit estimate` on graphs XNNPACK does not take whole: predicted vs real delegate calls, ops outside
the delegate, and latency.

edgevit's deploy forms lower to one XNNPACK delegate with nothing outside; a user's model usually does
not (timm's LayerNorm, GroupNorm, softmax over a middle dim, token means). For each model, its training
form (the timm-layout module, `create_model`) is exported the plain way (torch.export ->
to_edge_transform_and_lower(XnnpackPartitioner), fp32), and compared with what the cost replay predicts
for the same graph:

  calls    delegate calls per inference: replay (ModelWork.partitions) vs the lowered program
  outside  ops run by portable kernels: replay vs the lowered program
  ms       latency: uncalibrated estimate from this machine's measured XNNPACK peaks (measured in the same
           run) vs the median of --rounds runs of the .pte in the ExecuTorch runtime, 1 thread

    python tools/bench_partitions.py                            # the mobile hybrids' micro variants
    python tools/bench_partitions.py --models mobilevit_xxs,efficientvit_b0 --json out/partitions.json
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
for _noisy in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from edgevit._io import atomic_write_json  # noqa: E402
from edgevit.backends import get_backend  # noqa: E402
from edgevit.backends.executorch.cost import decompose_like_to_edge  # noqa: E402
from edgevit.backends.executorch.lowering import summarize_ops  # noqa: E402
from edgevit.backends.executorch.xnnpack_replay import graph_work  # noqa: E402
from edgevit.estimate.model import uncalibrated  # noqa: E402
from edgevit.models import create_model, get_model_spec  # noqa: E402

MODELS = ["mobilevit_micro", "mobilevitv2_micro", "fastvit_micro", "efficientvit_mit_micro",
          "efficientvit_msra_micro", "mobilenetv4_hybrid_micro"]
console = Console(stderr=True)


def lower_plain(model: torch.nn.Module, example: torch.Tensor):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    exported = torch.export.export(model, (example,))
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    return exported, edge


def median_ms(runner, example: torch.Tensor, rounds: int) -> float:
    for _ in range(3):
        runner(example)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        runner(example)
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def bench(name: str, cost, rounds: int) -> dict:
    spec = get_model_spec(name)
    size = spec.input_size[-1]
    torch.manual_seed(0)
    model = create_model(name).eval()
    example = torch.randn(1, 3, size, size)
    with torch.no_grad():
        exported, edge = lower_plain(model, example)
    ops = summarize_ops(edge.exported_program()).as_dict()
    work = graph_work(decompose_like_to_edge(exported), "fp32", name, tuple(example.shape))
    predicted = cost.predict(work)
    runner = get_backend("executorch").load(edge.to_executorch().buffer, 1)
    measured = median_ms(runner, example, rounds)
    return {"model": name, "input": size, "calls_lowered": ops["delegate_calls"],
            "calls_predicted": predicted.partitions, "outside_lowered": ops["non_delegated_ops"],
            "outside_predicted": predicted.outside_ops, "outside_ops": ops["non_delegated"],
            "predicted_ms": round(predicted.total_ms, 3), "outside_ms_predicted": round(predicted.outside_ms, 3),
            "measured_ms": round(measured, 3), "error": round(predicted.total_ms / measured - 1, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with console.status("measuring this machine's XNNPACK peaks (1 thread)"):
        peaks = get_backend("executorch").cost_replay().measure_peaks(threads=1)
    cost = uncalibrated("host", {p: v * 1e9 for p, v in peaks["peak_gmacs_per_s"].items() if v},
                        peaks["bandwidth_gbps"] * 1e9, "peaks measured in this run")
    rows = []
    for name in args.models.split(","):
        with console.status(f"{name}: plain export, lowering, timing"):
            rows.append(bench(name, cost, args.rounds))
    table = Table(title="training forms exported plainly (fp32, 1 thread): replay vs lowering vs runtime")
    for col in ("model", "px", "calls pred/real", "outside pred/real", "est ms", "of it outside", "measured ms",
                "error"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(r["model"], str(r["input"]), f"{r['calls_predicted']}/{r['calls_lowered']}",
                      f"{r['outside_predicted']}/{r['outside_lowered']}", f"{r['predicted_ms']:.3f}",
                      f"{r['outside_ms_predicted']:.3f}", f"{r['measured_ms']:.3f}", f"{r['error']:+.0%}")
    Console(width=140).print(table)
    if args.json:
        atomic_write_json(args.json, {"rows": rows, "peaks": peaks, "rounds": args.rounds})
    return 0


if __name__ == "__main__":
    sys.exit(main())
