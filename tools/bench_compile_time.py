#!/usr/bin/env python
"""How long `edgevit compile` takes and how much memory it holds, per pipeline stage, before/after the
compile-speed changes side by side.

Every compile runs in a fresh subprocess (so import costs, per-process caches and peak RSS are those of one
`edgevit compile`); each stage's own peak RSS is read from VmHWM, reset as the stage starts, and the
whole compile's peak is the largest of them. Variants:
  plain   EDGEVIT_PLAIN_COMPILE=1: the compile-speed changes switched off (the flow as it was)
  fast    the default flow
Variants alternate per repeat (plain, fast, plain, fast, ...), so both see the same machine load; the load
average is printed beside every run. The .pte sha256 of each run is printed: the variants must agree.

    nice python tools/bench_compile_time.py                               # L1 int8 pixel8 + a micro model
    nice python tools/bench_compile_time.py --models efficientformer_l1 --repeats 2 --json compile.json
    nice python tools/bench_compile_time.py --models tiny_vit_micro --device host --input-shape 1,3,96,96
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAIN_ENV = "EDGEVIT_PLAIN_COMPILE"
VARIANTS = {"plain": {PLAIN_ENV: "1"}, "fast": {PLAIN_ENV: "0"}}
# (model, device, extra compile options): L1 is issue 16's target; the micro model is the fixed-cost floor.
DEFAULT_RUNS = [("efficientformer_l1", "pixel8", {}),
                ("tiny_vit_micro", "host", {"input_shape": "1,3,96,96", "backend": "executorch"})]
MARK = "BENCH_COMPILE_TIME_JSON "


def _cpu_seconds() -> float:
    """CPU time of this process (user + system): on a loaded machine it moves far less than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _reset_stage_peak() -> bool:
    """Reset this process's resident high-water mark (VmHWM; Linux's clear_refs "5"), so each stage's own peak
    can be read at its end: a running maximum hides every stage after the biggest."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _stage_peak_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # KiB
    except OSError:
        pass
    return None


def _child(args) -> None:
    """One compile in this process; prints its stage times and peak RSS as one JSON line."""
    import warnings
    warnings.filterwarnings("ignore")
    import logging
    logging.disable(logging.WARNING)

    from edgevit.compile import CompileOptions, compile_model
    from edgevit.progress import StageProgress

    stages: list[dict] = []

    peak = [0.0]  # the process's peak so far: resetting VmHWM resets ru_maxrss too, so it is kept here

    class Recording(StageProgress):
        @contextlib.contextmanager
        def stage(self, description, total=None):
            peak[0] = max(peak[0], _peak_rss_mb())  # what ran between stages
            start, cpu, resettable = time.perf_counter(), _cpu_seconds(), _reset_stage_peak()
            yield lambda n=1: None
            own = _stage_peak_mb() if resettable else None
            peak[0] = max(peak[0], _peak_rss_mb(), own or 0.0)
            stages.append({"stage": description, "seconds": round(time.perf_counter() - start, 2),
                           "cpu_seconds": round(_cpu_seconds() - cpu, 2), "peak_rss_mb": round(peak[0], 1),
                           "stage_peak_rss_mb": None if own is None else round(own, 1)})

    import torch
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    started, cpu = time.perf_counter(), _cpu_seconds()
    with tempfile.TemporaryDirectory() as out:
        result = compile_model(CompileOptions(model=args.models[0], device=args.device, backend=args.backend,
                                              precision=args.precision,
                                              input_shape=args.input_shape, num_calib=args.num_calib,
                                              num_verify=args.num_verify, output_root=Path(out)), Recording())
    total = time.perf_counter() - started
    manifest = result.manifest
    print(MARK + json.dumps({"seconds": round(total, 2), "cpu_seconds": round(_cpu_seconds() - cpu, 2),
                             "peak_rss_mb": round(max(peak[0], _peak_rss_mb()), 1),
                             "stages": stages, "sha256": manifest["artifact"]["sha256"],
                             "sqnr_db": manifest["verification"]["sqnr_db"]}), flush=True)


def _run_one(model: str, device: str, variant: str, options: dict, args) -> dict:
    cmd = [sys.executable, __file__, "--child", "--models", model, "--device", device,
           "--num-calib", str(args.num_calib), "--num-verify", str(args.num_verify)]
    for key in ("backend", "precision", "input_shape", "torch_threads"):
        value = options.get(key, getattr(args, key))
        if value:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    load_before = os.getloadavg()[0]
    proc = subprocess.run(cmd, env={**os.environ, **VARIANTS[variant]}, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{model} ({variant}) failed:\n{proc.stderr[-3000:]}")
    return {"model": model, "device": device, "variant": variant, "loadavg_1min": round(load_before, 2),
            **json.loads(lines[-1][len(MARK):])}


def _cell(stage: dict | None) -> str:
    if stage is None:
        return f"{'-':>22s}"
    own = stage.get("stage_peak_rss_mb")
    return f"{stage['seconds']:8.1f}/{stage['cpu_seconds']:<6.1f}" + (f"{own:6.0f}MB" if own is not None else " " * 8)


def _table(runs: list[dict]) -> None:
    for model in dict.fromkeys(r["model"] for r in runs):
        mine = [r for r in runs if r["model"] == model]
        names = list(dict.fromkeys(s["stage"] for r in mine for s in r["stages"]))
        heads = [f"{r['variant']}#{i}" for i, r in enumerate(mine)]
        print(f"\n{model} on {mine[0]['device']} (per stage: wall s / CPU s / the stage's own peak RSS MB)")
        print(f"{'stage':52s}" + "".join(f"{h:>22s}" for h in heads))
        for name in names:
            cells = [next((s for s in r["stages"] if s["stage"] == name), None) for r in mine]
            print(f"{name[:52]:52s}" + "".join(_cell(c) for c in cells))
        for label, key, fmt in (("total wall s", "seconds", "{:22.1f}"), ("total CPU s", "cpu_seconds", "{:22.1f}"),
                                ("peak RSS MB", "peak_rss_mb", "{:22.0f}"),
                                ("load avg (1 min, at start)", "loadavg_1min", "{:22.2f}"),
                                ("verification SQNR dB", "sqnr_db", "{:22.2f}")):
            print(f"{label:52s}" + "".join(fmt.format(r[key]) for r in mine))
        print(f"{'.pte sha256':52s}" + "".join(f"{r['sha256'][:12]:>22s}" for r in mine))
        plain = [r for r in mine if r["variant"] == "plain"]
        fast = [r for r in mine if r["variant"] == "fast"]
        if plain and fast:
            def mean(rs, k):
                return sum(r[k] for r in rs) / len(rs)
            same = len({r["sha256"] for r in mine}) == 1
            print(f"fast/plain: wall {mean(fast, 'seconds') / mean(plain, 'seconds'):.2f}x, "
                  f"CPU {mean(fast, 'cpu_seconds') / mean(plain, 'cpu_seconds'):.2f}x, "
                  f"peak RSS {mean(fast, 'peak_rss_mb') / mean(plain, 'peak_rss_mb'):.2f}x; "
                  f".pte bytes {'identical' if same else 'DIFFER'} across runs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help="models to compile (default: efficientformer_l1 on pixel8 "
                        "and tiny_vit_micro on host at 96)")
    parser.add_argument("--device", default=None, help="device for --models (default pixel8)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--input-shape", default=None)
    parser.add_argument("--num-calib", type=int, default=32)
    parser.add_argument("--num-verify", type=int, default=8)
    parser.add_argument("--torch-threads", type=int, default=0, help="0: torch's default (as the CLI)")
    parser.add_argument("--variants", nargs="+", default=["plain", "fast"], choices=list(VARIANTS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write every run here")
    parser.add_argument("--child", action="store_true",
                        help="internal: one compile in this process, stage timings printed (the parent spawns it)")
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    plan = [(m, args.device or "pixel8", {}) for m in args.models] if args.models else DEFAULT_RUNS
    runs = []
    for model, device, options in plan:
        for _ in range(args.repeats):
            for variant in args.variants:
                run = _run_one(model, device, variant, options, args)
                print(f"{model} {variant}: {run['seconds']:.1f} s, {run['peak_rss_mb']:.0f} MB peak RSS "
                      f"(load {run['loadavg_1min']:.2f})", flush=True)
                runs.append(run)
    _table(runs)
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "cpu_count": os.cpu_count(),
                                         "runs": runs}, indent=1))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
