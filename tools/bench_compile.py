#!/usr/bin/env python
"""Speed of edgevit's ExecuTorch artifacts against the plain ExecuTorch tutorial export, side by side.

For each model (random init; no weights can be downloaded here) at 224, one thread:
  eager      torch eager fp32 (the reference)
  plain_fp32 torch.export -> to_edge_transform_and_lower(XnnpackPartitioner) on the training-form model
  plain_int8 the tutorial's PT2E recipe: XNNPACKQuantizer(per-channel symmetric) -> prepare_pt2e ->
             calibrate -> convert_pt2e -> lower, on the training-form model
  edgevit_fp32 / edgevit_int8: `edgevit compile MODEL --device host` (same calibration images)

Timing is round-robin: every round runs each candidate once, so all of them see the same machine
noise; medians and p90 of >= 20 rounds after warm-up. Figures that matter are the ratios.

    python tools/bench_compile.py                       # the four families' smallest models
    python tools/bench_compile.py --models efficientformer_l1 --rounds 50 --json bench.json
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from edgevit._io import atomic_write_json  # noqa: E402
from edgevit.backends import get_backend  # noqa: E402
from edgevit.compile import CompileOptions, compare_outputs, compile_model  # noqa: E402
from edgevit.data import Preprocess, synthetic_images  # noqa: E402
from edgevit.models import (
    get_model_spec,  # noqa: E402
    resolve_model,  # noqa: E402
)
from edgevit.timing import time_round_robin  # noqa: E402

DEFAULT_MODELS = ["efficientformer_l1", "efficientformerv2_s0", "tiny_vit_5m_224", "shvit_s1"]
console = Console(width=160)


def plain_executorch(model: torch.nn.Module, example: torch.Tensor, calibration: torch.Tensor | None) -> bytes:
    """The ExecuTorch XNNPACK tutorial, step for step (no edgevit code)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    exported = torch.export.export(model, (example,))
    if calibration is not None:
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(exported.module(), quantizer)
        with torch.no_grad():
            for i in range(calibration.shape[0]):
                prepared(calibration[i:i + 1])
        exported = torch.export.export(convert_pt2e(prepared), (example,))
    return to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch().buffer


def bench_model(name: str, rounds: int, warmup: int, threads: int, num_calib: int, workdir: Path) -> dict:
    spec = get_model_spec(name)
    model = resolve_model(name).module  # the same (synthetic) weights compile_model uses
    example = torch.zeros(1, *spec.input_size)
    pre = Preprocess(spec.input_size[1], spec.input_size[2], spec.mean, spec.std, spec.crop_pct, spec.interpolation)
    calibration = synthetic_images(pre, num_calib, seed=0).inputs
    verification = synthetic_images(pre, 8, seed=1).inputs
    backend = get_backend("executorch")

    runners, sizes, compile_s, cosine = {"eager": model}, {}, {}, {}
    for precision in ("fp32", "int8"):
        start = time.perf_counter()
        data = plain_executorch(model, example, calibration if precision == "int8" else None)
        compile_s[f"plain_{precision}"] = time.perf_counter() - start
        runners[f"plain_{precision}"], sizes[f"plain_{precision}"] = backend.load(data, threads), len(data)
    for precision in ("fp32", "int8"):
        start = time.perf_counter()
        # backend named: host's preferred backend is LiteRT, and this compares ExecuTorch programs.
        result = compile_model(CompileOptions(model=name, device="host", backend="executorch", precision=precision,
                                              num_calib=num_calib, output_root=workdir, threads=threads))
        compile_s[f"edgevit_{precision}"] = time.perf_counter() - start
        label = f"edgevit_{precision}"
        runners[label] = backend.load(result.artifact, threads)
        sizes[label] = result.artifact.stat().st_size
    with torch.no_grad():
        reference = torch.cat([model(verification[i:i + 1]) for i in range(len(verification))])
        for label, run in runners.items():
            if label != "eager":
                out = torch.cat([run(verification[i:i + 1]) for i in range(len(verification))])
                cosine[label] = compare_outputs(reference, out).cosine

    torch.set_num_threads(threads)
    times = time_round_robin(runners, example, rounds, warmup)
    rows = {}
    for label, ts in times.items():
        ts = sorted(ts)
        rows[label] = {"median_ms": statistics.median(ts), "p90_ms": ts[int(0.9 * (len(ts) - 1))],
                       "size_bytes": sizes.get(label), "cosine_vs_fp32": cosine.get(label),
                       "compile_s": compile_s.get(label)}
    med = {k: v["median_ms"] for k, v in rows.items()}
    return {"model": name, "resolution": spec.resolution, "threads": threads, "rounds": rounds, "rows": rows,
            "ratios": {"plain_int8/edgevit_int8": med["plain_int8"] / med["edgevit_int8"],
                       "plain_fp32/edgevit_fp32": med["plain_fp32"] / med["edgevit_fp32"],
                       "eager/edgevit_int8": med["eager"] / med["edgevit_int8"]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--num-calib", type=int, default=32)
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args(argv)
    from edgevit.errors import EdgevitError
    from edgevit.models import get_model_spec

    try:  # every name before the first slow compile (names are space-separated)
        for name in args.models:
            get_model_spec(name)
    except EdgevitError as e:
        console.print(f"[red]error:[/] {e}")
        return 2

    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            console.print(f"[bold]{name}[/]: building 4 artifacts, then {args.rounds} round-robin rounds…")
            results.append(bench_model(name, args.rounds, args.warmup, args.threads, args.num_calib, Path(workdir)))
            _print(results[-1])
    if args.json:
        atomic_write_json(args.json, results)
    return 0


def _print(result: dict) -> None:
    table = Table(title=f"{result['model']} @ {result['resolution']}, {result['threads']} thread(s), "
                        f"{result['rounds']} rounds")
    for col in ("candidate", "median ms", "p90 ms", "size MB", "cosine vs fp32", "compile s"):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    for label, r in result["rows"].items():
        table.add_row(label, f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}",
                      f"{r['size_bytes'] / 2**20:.2f}" if r["size_bytes"] else "-",
                      f"{r['cosine_vs_fp32']:.5f}" if r["cosine_vs_fp32"] is not None else "-",
                      f"{r['compile_s']:.1f}" if r["compile_s"] else "-")
    console.print(table)
    console.print("ratios: " + ", ".join(f"{k} = {v:.2f}x" for k, v in result["ratios"].items()))


if __name__ == "__main__":
    sys.exit(main())
