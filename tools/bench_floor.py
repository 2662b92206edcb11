#!/usr/bin/env python
"""A measured GEMM floor: edgevit's int8 .pte against a program of ONLY the model's GEMM and conv ops.

For each model (synthetic weights, synthetic 1/f images; no weights or data can be downloaded here):
  1. trace the deploy form's GEMM/conv ops with their exact shapes (a TorchDispatchMode over one forward:
     aten.mm/addmm (linear, or activation x activation), bmm/baddbmm, convolution incl. depthwise, and
     scaled_dot_product_attention as its two batched matmuls);
  2. build the floor program: those ops side by side, each on its own program input and returned as its own
     output (so nothing is elided), with the same shapes, groups, strides and MACs (checked: the floor's
     MACs, counted by torch's FlopCounterMode like edgevit's MAC counter, equal the deploy form's);
  3. quantize it with the ExecuTorch tutorial's PT2E recipe (XNNPACKQuantizer, per-channel symmetric) and
     lower it to XNNPACK: linear/conv run as XNNPACK's int8 GEMM/IGEMM kernels; activation x activation
     matmuls stay fp32 (XNNPACK has no static int8 batch matmul; edgevit's artifact runs them in fp32 too);
  4. time it round-robin with edgevit's int8 artifact and the plain int8 export of the same weights, in one
     run. SQNR / top-1 agreement are against torch eager fp32 on the same synthetic images.

The floor program also converts each op's fp32 input to int8 and its output back, transposes NCHW inputs
to NHWC, and passes ~100 inputs/outputs: costs a model that chains its ops in int8 NHWC does not have. So an
ETDump profile of the floor program (XNNPACK's own per-operator events, medians) gives the share of its op
time spent in the GEMM/conv kernels, and the GEMM floor = the floor program's round-robin median x that share:
the kernels' time for exactly the model's GEMM/conv shapes, under the same load as the other two candidates.
"x floor" = edgevit int8 / GEMM floor; "x floor program" = edgevit int8 / the floor program's whole wall;
"x floor (ETDump)" = the sum of edgevit int8's per-op medians / the floor kernels' (two profiles, no wall
clock: the figure least moved by other processes on a shared machine).

    python tools/bench_floor.py                                  # the four families' smallest models, 224
    python tools/bench_floor.py --models shvit_s1 fastvit_t8 --rounds 40 --json floor.json
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

warnings.filterwarnings("ignore")
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from edgevit._io import atomic_write_json  # noqa: E402
from edgevit.errors import EdgevitError  # noqa: E402

DEFAULT_MODELS = ["efficientformer_l1", "efficientformerv2_s0", "tiny_vit_5m_224", "shvit_s1"]
console = Console(width=170)
aten = torch.ops.aten

_SDPA = tuple(getattr(aten, n).default for n in ("_scaled_dot_product_flash_attention_for_cpu",
                                                  "_scaled_dot_product_efficient_attention",
                                                  "_scaled_dot_product_flash_attention") if hasattr(aten, n))


class GemmOp(NamedTuple):
    """One GEMM-class op of a model at its exact shape.

    kind: "linear" (activation [M, K] x weight, N outputs), "matmul" (activation x activation: a_shape @
    b_shape, batched), "conv" (input [1, C, H, W], weight [O, C/groups, kh, kw]).
    """
    kind: str
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]
    bias: bool = False
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1

    @property
    def macs(self) -> int:
        if self.kind == "linear":
            return self.a_shape[0] * self.a_shape[1] * self.b_shape[0]
        if self.kind == "matmul":
            *batch, m, k = self.a_shape
            return _prod(batch) * m * k * self.b_shape[-1]
        out = _conv_out(self.a_shape[2:], self.b_shape[2:], self.stride, self.padding, self.dilation)
        return self.a_shape[0] * self.b_shape[0] * _prod(out) * _prod(self.b_shape[1:])


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def _conv_out(size, kernel, stride, padding, dilation) -> list[int]:
    return [(s + 2 * p - d * (k - 1) - 1) // st + 1 for s, k, st, p, d in zip(size, kernel, stride, padding, dilation)]


class _GemmTracer(TorchDispatchMode):
    """Records every GEMM/conv the forward dispatches, telling weights (parameters/buffers) from activations."""

    def __init__(self, weight_storages: set[int]):
        super().__init__()
        self.weights, self.ops = weight_storages, []

    def _is_weight(self, t: torch.Tensor) -> bool:
        return t.untyped_storage().data_ptr() in self.weights

    def _mm(self, a, b, bias: bool, batched: bool):
        if not batched and self._is_weight(b):        # x [M, K] @ W^T [K, N]: a linear
            self.ops.append(GemmOp("linear", tuple(a.shape), (b.shape[1], b.shape[0]), bias))
        elif not batched and self._is_weight(a):      # W [M, K] @ x [K, N] = (x^T W^T)^T: a linear on x^T
            self.ops.append(GemmOp("linear", (b.shape[1], b.shape[0]), tuple(a.shape), bias))
        else:
            self.ops.append(GemmOp("matmul", tuple(a.shape), tuple(b.shape)))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten.mm.default:
            self._mm(args[0], args[1], False, False)
        elif func is aten.addmm.default:
            self._mm(args[1], args[2], True, False)
        elif func in (aten.bmm.default, aten.baddbmm.default):
            a, b = (args[0], args[1]) if func is aten.bmm.default else (args[1], args[2])
            self._mm(a, b, False, True)
        elif func is aten.convolution.default:
            x, w, b, stride, padding, dilation, transposed, _, groups = args[:9]
            if transposed or w.dim() != 4:
                raise EdgevitError(f"bench_floor handles 2-D convolutions; this model has a "
                                   f"{'transposed ' if transposed else ''}{w.dim() - 2}-D one (weight {list(w.shape)})")
            self.ops.append(GemmOp("conv", tuple(x.shape), tuple(w.shape), b is not None, tuple(stride),
                                   tuple(padding), tuple(dilation), int(groups)))
        elif func in _SDPA:
            q, k, v = args[:3]
            self.ops.append(GemmOp("matmul", tuple(q.shape), tuple(k.shape[:-2]) + (k.shape[-1], k.shape[-2])))
            attn = tuple(q.shape[:-1]) + (k.shape[-2],)
            self.ops.append(GemmOp("matmul", attn, tuple(v.shape)))
        return func(*args, **kwargs)


@torch.no_grad()
def trace_gemm_ops(model: nn.Module, example: torch.Tensor) -> list[GemmOp]:
    """The model's GEMM/conv ops, in execution order, at the shapes ``example`` gives them."""
    storages = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    with _GemmTracer(storages) as tracer:
        model.eval()(example)
    return tracer.ops


class FloorProgram(nn.Module):
    """The ops of ``ops`` side by side: op i reads its own input(s) and returns its own output."""

    def __init__(self, ops: list[GemmOp]):
        super().__init__()
        self.ops = list(ops)
        layers = []
        for op in ops:
            if op.kind == "linear":
                layers.append(nn.Linear(op.a_shape[1], op.b_shape[0], bias=op.bias))
            elif op.kind == "conv":
                w = op.b_shape
                layers.append(nn.Conv2d(op.a_shape[1], w[0], tuple(w[2:]), op.stride, op.padding, op.dilation,
                                        op.groups, bias=op.bias))
            else:
                layers.append(nn.Identity())
        self.layers = nn.ModuleList(layers)

    def example_inputs(self, seed: int = 0) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        shapes = [s for op in self.ops for s in ((op.a_shape, op.b_shape) if op.kind == "matmul" else (op.a_shape,))]
        return tuple(torch.randn(s, generator=g) for s in shapes)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs, i = [], 0
        for op, layer in zip(self.ops, self.layers):
            if op.kind == "matmul":
                outs.append(torch.matmul(inputs[i], inputs[i + 1]))
                i += 2
            else:
                outs.append(layer(inputs[i]))
                i += 1
        return tuple(outs)


@torch.no_grad()
def count_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """MACs by torch's FlopCounterMode (edgevit.models._complexity counts the same way: FLOPs // 2)."""
    with FlopCounterMode(display=False) as counter:
        module.eval()(*inputs)
    return counter.get_total_flops() // 2


def floor_pte(ops: list[GemmOp], calib_batches: int = 4) -> tuple[bytes, tuple[torch.Tensor, ...]]:
    """The floor program, PT2E int8 (XNNPACKQuantizer, per-channel symmetric) and lowered to XNNPACK."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    torch.manual_seed(0)
    program = FloorProgram(ops).eval()
    inputs = program.example_inputs()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(program, inputs).module(), quantizer)
    with torch.no_grad():
        for seed in range(calib_batches):
            prepared(*program.example_inputs(seed))
    exported = torch.export.export(convert_pt2e(prepared), inputs)
    return to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch().buffer, inputs


_KERNELS = ("GEMM", "Convolution", "Fully Connected", "Batch Matrix Multiply")


def op_profile(pte: Path, threads: int, runs: int = 20) -> tuple[float, dict[str, float]]:
    """(median wall ms of ``run_method``, summed per-op median ms by XNNPACK op type) from one ETDump profile."""
    from edgevit.backends.executorch.profiling import parse_profile, profile_here

    run = profile_here(pte, runs=runs, warmup=3, threads=threads, timeout=900)
    by_type: dict[str, float] = {}
    for row in parse_profile(run, pte, warmup=3).rows:
        by_type[row["op_type"]] = by_type.get(row["op_type"], 0.0) + row["ms"]
    return statistics.median(run.times_ms), dict(sorted(by_type.items(), key=lambda kv: -kv[1]))


def kernel_share(pte: Path, threads: int, runs: int = 20) -> tuple[float, dict[str, float]]:
    """(GEMM/conv kernel ms / all ops' ms, ms by XNNPACK op type) from one ETDump profile of ``pte``.

    Both are sums of per-operator medians (XNNPACK's own events), so a busy machine, which stretches the wall
    clock by descheduling the process, moves neither much; the wall is not the denominator for that reason."""
    _, by_type = op_profile(pte, threads, runs)
    total = sum(by_type.values())
    return (sum(ms for t, ms in by_type.items() if is_gemm_kernel(t)) / total if total else 0.0), by_type


def is_gemm_kernel(op_type: str) -> bool:
    return any(k in op_type for k in _KERNELS)


def _load_floor(data: bytes, threads: int):
    """The floor program in the same call the profiler's runner times (many inputs and outputs: no copies)."""
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(threads)
    module = portable_lib._load_for_executorch_from_buffer(data, program_verification=portable_lib.Verification.Minimal)
    # The module points into ``data``: the closure keeps both alive together.
    return lambda inputs: (data, module.run_method("forward", inputs, clone_outputs=False))[1]


def bench_model(name: str, rounds: int, warmup: int, threads: int, num_calib: int, workdir: Path) -> dict:
    from bench_compile import plain_executorch

    from edgevit.backends import get_backend
    from edgevit.compile import CompileOptions, compare_outputs, compile_model
    from edgevit.data import Preprocess, synthetic_images
    from edgevit.models import prepare_model
    from edgevit.timing import time_round_robin

    torch.set_num_threads(1)
    model = prepare_model(name)
    pre = Preprocess.from_dict(model.preprocessing)
    calibration = synthetic_images(pre, num_calib, seed=0).inputs
    verification = synthetic_images(pre, 16, seed=1).inputs
    backend = get_backend("executorch")

    ops = trace_gemm_ops(model.deployed, model.example)
    floor_data, floor_inputs = floor_pte(ops)
    floor_path = workdir / f"{name}-floor.pte"
    floor_path.write_bytes(floor_data)
    program = FloorProgram(ops)
    macs = {"deployed": count_macs(model.deployed, (model.example,)), "floor": count_macs(program, floor_inputs),
            "floor_ops": sum(op.macs for op in ops)}

    plain = plain_executorch(model.reference, model.example, calibration)
    result = compile_model(CompileOptions(model=name, device="host", backend="executorch", precision="int8",
                                          num_calib=num_calib, output_root=workdir, threads=threads))
    runners = {"edgevit_int8": backend.load(result.artifact, threads), "plain_int8": backend.load(plain, threads)}
    floor_runner = _load_floor(floor_data, threads)
    runners["floor"] = lambda _x: floor_runner(floor_inputs)

    agreement = {}
    with torch.no_grad():
        reference = torch.cat([model.reference(verification[i:i + 1]) for i in range(len(verification))])
        for label in ("edgevit_int8", "plain_int8"):
            out = torch.cat([runners[label](verification[i:i + 1]) for i in range(len(verification))])
            agreement[label] = compare_outputs(reference, out)

    torch.set_num_threads(threads)
    load = os.getloadavg()
    times = time_round_robin(runners, model.example, rounds, warmup)
    load = [round((a + b) / 2, 2) for a, b in zip(load, os.getloadavg())]
    runners.clear()
    share, by_type = kernel_share(floor_path, threads)
    edgevit_wall, edgevit_by_type = op_profile(result.artifact, threads)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = {}
    for label, ts in times.items():
        a = agreement.get(label)
        rows[label] = {"median_ms": med[label], "p90_ms": sorted(ts)[int(0.9 * (len(ts) - 1))],
                       "x_floor": med[label] / (med["floor"] * share), "x_floor_program": med[label] / med["floor"],
                       "x_plain": med[label] / med["plain_int8"],
                       "sqnr_db": a.sqnr_db if a else None, "top1_agreement": a.top1_agreement if a else None,
                       "cosine": a.cosine if a else None}
    counts = {k: sum(op.kind == k for op in ops) for k in ("linear", "conv", "matmul")}
    return {"model": name, "input_shape": list(model.input_shape), "threads": threads, "rounds": rounds,
            "load_average": load, "weights": "synthetic (seed 0)",
            "images": "synthetic 1/f (calib seed 0, eval seed 1)",
            "ops": counts, "macs": macs, "floor_kernel_share": share,
            "floor_ms_by_op_type": {k: round(v, 4) for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])},
            "gemm_floor_ms": med["floor"] * share, "rows": rows,
            "x_floor_etdump": sum(edgevit_by_type.values()) / sum(v for k, v in by_type.items() if is_gemm_kernel(k)),
            "edgevit_profile": {"wall_ms": edgevit_wall, "ms_by_op_type": {k: round(v, 4) for k, v in
                                                                           edgevit_by_type.items()},
                                "top_non_gemm": [k for k in edgevit_by_type if not is_gemm_kernel(k)][:5]},
            "op_list": [op._asdict() for op in ops]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="zoo names (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--num-calib", type=int, default=32)
    parser.add_argument("--json", type=Path, help="Also write the results here (atomically).")
    args = parser.parse_args(argv)
    from edgevit.models import get_model_spec

    try:
        for name in args.models:
            get_model_spec(name)
    except EdgevitError as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            console.print(f"[bold]{name}[/]: tracing GEMM/conv ops, building floor + plain + edgevit int8, "
                          f"then {args.rounds} round-robin rounds…")
            try:
                results.append(bench_model(name, args.rounds, args.warmup, args.threads, args.num_calib, Path(workdir)))
            except EdgevitError as e:
                console.print(f"[red]error:[/] {name}: {e}")
                return 2
            _print(results[-1])
            if args.json:
                atomic_write_json(args.json, results)
    _print_summary(results)
    return 0


def _print(r: dict) -> None:
    console.print(f"  ops: {r['ops']}; MACs deployed {r['macs']['deployed'] / 1e6:.1f} M, floor "
                  f"{r['macs']['floor'] / 1e6:.1f} M; GEMM/conv kernels are {r['floor_kernel_share']:.0%} "
                  f"of the floor program's wall (GEMM floor {r['gemm_floor_ms']:.2f} ms); "
                  f"load average {r['load_average']}")
    prof = r["edgevit_profile"]
    console.print("  edgevit int8 top non-GEMM ops (ETDump, ms): " + "; ".join(
        f"{k} {prof['ms_by_op_type'][k]:.3f}" for k in prof["top_non_gemm"]) + f" of {prof['wall_ms']:.2f} ms wall")


def _print_summary(results: list[dict]) -> None:
    table = Table(title="int8 vs the measured GEMM floor and the plain export (median ms; ratios from one "
                        "round-robin run per model; synthetic weights + images)")
    for col in ("model", "threads", "floor program", "GEMM floor", "edgevit int8", "plain int8", "x floor",
                "x floor program", "x floor (ETDump)", "x plain", "SQNR edgevit/plain dB", "top-1 edgevit/plain",
                "load avg"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in results:
        e, p, f = r["rows"]["edgevit_int8"], r["rows"]["plain_int8"], r["rows"]["floor"]
        table.add_row(r["model"], str(r["threads"]), f"{f['median_ms']:.2f}", f"{r['gemm_floor_ms']:.2f}",
                      f"{e['median_ms']:.2f}", f"{p['median_ms']:.2f}", f"{e['x_floor']:.2f}",
                      f"{e['x_floor_program']:.2f}", f"{r['x_floor_etdump']:.2f}",
                      f"{e['x_plain']:.2f}", f"{e['sqnr_db']:.1f} / {p['sqnr_db']:.1f}",
                      f"{e['top1_agreement']:.0%} / {p['top1_agreement']:.0%}", f"{r['load_average'][0]:.2f}")
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
