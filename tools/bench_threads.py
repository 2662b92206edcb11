#!/usr/bin/env python
"""Thread scaling of edgevit's int8 .pte (ExecuTorch + XNNPACK): 1 vs 2 (or more) threads, round-robin.

ExecuTorch's XNNPACK delegate takes the process-wide pthreadpool when a method is loaded
(``xnn_create_runtime_v4(..., get_pthreadpool(), ...)`` in backends/xnnpack/runtime/XNNCompiler.cpp) and
``_unsafe_reset_threadpool(n)`` replaces that pool (extension/threadpool/threadpool.cpp): a method loaded
before a reset keeps a pointer to the destroyed pool. So one process cannot hold a 1-thread and a 2-thread
method at once. Each thread count gets its own worker process (pool set, then the artifact loaded); the
parent drives them round-robin, one turn per worker per round, so every thread count sees the same machine
noise. A turn runs twice and keeps the second execution: pthreadpool's workers spin a while after a job,
which would otherwise tax the next worker's first execution. Each worker times its own executions
(perf_counter around ``Method.execute``) and reports its pool's thread count (``_threadpool_get_thread_count``),
which is checked against the one asked for.

The load average (1 min, before and after) is reported beside every model. On a shared machine the wall
clock ratio is not parallel efficiency alone: a second thread competes with other processes (pessimistic),
and two runnable threads also get a larger share of a contended CPU than one (optimistic). So each thread
count is also profiled once (ETDump: XNNPACK's per-operator events) and the speedup of the summed per-op
medians is reported beside the wall-clock one.

    python tools/bench_threads.py                                 # every family's smallest model, int8, 224
    python tools/bench_threads.py --models efficientformer_l1 tiny_vit_5m_224 --threads 1 2 --rounds 40
    python tools/bench_threads.py --models shvit_s1 --json threads.json --artifacts out/speed
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
logging.getLogger("torchao").setLevel(logging.ERROR)

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from edgevit._io import atomic_write_json  # noqa: E402
from edgevit.errors import EdgevitError  # noqa: E402

# Every family's smallest model at 224 (the four original families first).
DEFAULT_MODELS = ["efficientformer_l1", "efficientformerv2_s0", "tiny_vit_5m_224", "shvit_s1", "mobilevit_xxs",
                  "mobilevitv2_050", "fastvit_t8", "efficientvit_b0", "efficientvit_m0", "mobilenetv4_hybrid_medium"]
console = Console(width=160)

_WORKER = r"""
import json, sys, time
import torch
from executorch.extension.pybindings import portable_lib
from edgevit.backends.executorch.runtime import load_program
torch.set_num_threads(1)
path, threads, shape = sys.argv[1], int(sys.argv[2]), [int(v) for v in sys.argv[3].split(",")]
run = load_program(path, threads)              # resets the pool to `threads`, then loads the method
x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
run(x)
print(json.dumps({"ready": True, "pool_threads": portable_lib._threadpool_get_thread_count()}), flush=True)
for line in sys.stdin:
    n = int(line)
    if n <= 0:
        break
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps(times), flush=True)
"""


class Worker:
    """One process holding ``artifact`` loaded with a ``threads``-thread XNNPACK pool."""

    def __init__(self, artifact: Path, threads: int, shape: tuple[int, ...]):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(artifact), str(threads),
                                      ",".join(map(str, shape))], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)
        hello = self._line()
        self.pool_threads = hello["pool_threads"]
        if self.pool_threads != threads:
            self.close()
            raise EdgevitError(f"asked ExecuTorch for {threads} thread(s), its pool has {self.pool_threads}")

    def _line(self):
        line = self.proc.stdout.readline()
        if not line:
            raise EdgevitError(f"the timing worker exited (code {self.proc.wait()}) before answering")
        return json.loads(line)

    def run(self, n: int) -> list[float]:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return self._line()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("0\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


def time_threads(artifact: Path, shape: tuple[int, ...], threads: list[int], rounds: int, warmup: int) -> dict:
    """Median/p90 ms per thread count, the workers' pool sizes and the load average around the timing."""
    workers = {t: Worker(artifact, t, shape) for t in threads}
    try:
        for w in workers.values():
            w.run(warmup)
        load_before = os.getloadavg()[0]
        times: dict[int, list[float]] = {t: [] for t in threads}
        for _ in range(rounds):
            for t, w in workers.items():
                # Two executions per turn, the second one kept: the first can still share the CPU with the
                # previous worker's pool threads, which spin a while after their last job before sleeping.
                times[t].append(w.run(2)[-1])
        load_after = os.getloadavg()[0]
    finally:
        for w in workers.values():
            w.close()
    rows = {t: {"median_ms": statistics.median(ts), "p90_ms": sorted(ts)[int(0.9 * (len(ts) - 1))],
                "min_ms": min(ts), "pool_threads": workers[t].pool_threads} for t, ts in times.items()}
    base = rows[threads[0]]["median_ms"]
    for r in rows.values():
        r["speedup"] = base / r["median_ms"]
    return {"rows": rows, "load_average_1min": [round(load_before, 2), round(load_after, 2)]}


def etdump_op_ms(artifact: Path, threads: int, runs: int = 20) -> float:
    """The sum of the per-operator medians of one ETDump profile (XNNPACK's own events) at ``threads``.

    On a loaded machine the wall clock of a 2-thread process also measures the scheduler (two runnable threads
    get a larger share of the CPU than one), so per-op medians are reported beside it."""
    from edgevit.backends.executorch.profiling import parse_profile, profile_here

    run = profile_here(artifact, runs=runs, warmup=3, threads=threads, timeout=900)
    return sum(row["ms"] for row in parse_profile(run, artifact, warmup=3).rows)


def bench_model(name: str, threads: list[int], rounds: int, warmup: int, num_calib: int, workdir: Path,
                artifacts: Path | None = None) -> dict:
    """Compile ``name`` (int8, host, ExecuTorch) or take ``artifacts/NAME-host/`` compiled earlier, then time it."""
    from edgevit.compile import CompileOptions, compile_model

    found = artifacts / f"{name}-host" if artifacts else None
    if found and (found / "model.pte").exists() and (found / "manifest.json").exists():
        artifact, manifest = found / "model.pte", json.loads((found / "manifest.json").read_text())
    else:
        result = compile_model(CompileOptions(model=name, device="host", backend="executorch", precision="int8",
                                              num_calib=num_calib, output_root=artifacts or workdir))
        artifact, manifest = result.artifact, result.manifest
    if manifest.get("precision") not in (None, "int8"):
        raise EdgevitError(f"{artifact} is {manifest['precision']}, not int8; remove it or pick another --artifacts")
    shape = tuple(manifest["inputs"][0]["shape"])
    result = {"model": name, "precision": "int8", "input_shape": list(shape), "rounds": rounds,
              "artifact": str(artifact), **time_threads(artifact, shape, threads, rounds, warmup)}
    op_ms = {t: etdump_op_ms(artifact, t) for t in threads}
    for t, row in result["rows"].items():
        row["etdump_op_ms"], row["etdump_speedup"] = op_ms[t], op_ms[threads[0]] / op_ms[t]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="zoo names (default: %(default)s)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts; ratios vs the first")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--num-calib", type=int, default=16)
    parser.add_argument("--artifacts", type=Path, help="Reuse DIR/MODEL-host/model.pte (an `edgevit compile "
                        "MODEL --device host --backend executorch --precision int8 --out DIR`); compile the "
                        "missing ones into DIR")
    parser.add_argument("--json", type=Path, help="Also write the results here (atomically).")
    args = parser.parse_args(argv)
    from edgevit.models import get_model_spec

    try:
        for name in args.models:
            get_model_spec(name)
        if any(t < 1 for t in args.threads) or len(set(args.threads)) != len(args.threads):
            raise EdgevitError(f"--threads takes distinct counts >= 1, got {args.threads}")
    except EdgevitError as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            console.print(f"[bold]{name}[/]: compiling int8, then {args.rounds} round-robin rounds at "
                          f"{', '.join(map(str, args.threads))} thread(s)…")
            try:
                results.append(bench_model(name, args.threads, args.rounds, args.warmup, args.num_calib,
                                           Path(workdir), args.artifacts))
            except EdgevitError as e:
                console.print(f"[red]error:[/] {name}: {e}")
                return 2
            r = results[-1]
            console.print("  " + ", ".join(f"{t}t {row['median_ms']:.2f} ms (x{row['speedup']:.2f})"
                                           for t, row in r["rows"].items())
                          + f"; load average {r['load_average_1min']}")
            if args.json:
                atomic_write_json(args.json, results)
    _print(results, args.threads)
    return 0


def _print(results: list[dict], threads: list[int]) -> None:
    table = Table(title="int8 thread scaling (median ms; ratios from one round-robin run per model)")
    table.add_column("model")
    for t in threads:
        table.add_column(f"{t}t ms", justify="right")
    for t in threads[1:]:
        table.add_column(f"{t}t speedup", justify="right")
    for t in threads[1:]:
        table.add_column(f"{t}t speedup (ETDump ops)", justify="right")
    table.add_column("load avg 1 min", justify="right")
    for r in results:
        rows = r["rows"]
        table.add_row(r["model"], *(f"{rows[t]['median_ms']:.2f}" for t in threads),
                      *(f"{rows[t]['speedup']:.2f}x" for t in threads[1:]),
                      *(f"{rows[t]['etdump_speedup']:.2f}x" for t in threads[1:]),
                      " -> ".join(map(str, r["load_average_1min"])))
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
