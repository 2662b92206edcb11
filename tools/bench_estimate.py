#!/usr/bin/env python
"""Validate `edgevit estimate` on this machine: calibrate on three families, predict the fourth.

    python tools/bench_estimate.py                    # 13 model/resolution configs x fp32, int8; 1 thread
    python tools/bench_estimate.py --rounds 60 --json estimate.json

1. Compile every config for `host` with ExecuTorch (cached under out/estimate-bench/, reruns skip it).
2. Measure all artifacts side by side: every round runs each artifact once in the plain runtime (timed:
   wall clock and this thread's CPU time) and once with ETDump on (per-operator profile), in a shuffled
   order, so machine noise hits every model alike. The measured latency is the median CPU time per
   inference: with one runtime thread XNNPACK runs inline, so on an idle core it equals the wall clock,
   and on a shared machine it leaves out the time other processes hold the core (both are reported).
3. For each family: fit the latency model on the other three families' per-operator profiles (both
   precisions), predict the held-out family's models, compare with their measured median.
4. Print the table and the share of predictions within +-15%; write JSON and a PNG (predicted vs measured).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import statistics
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path

warnings.filterwarnings("ignore")
for _noisy in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

import torch

from edgevit._io import atomic_write_bytes, atomic_write_json
from edgevit.backends import get_backend
from edgevit.backends.cost import ModelWork, WorkItem
from edgevit.backends.executorch.etdump import parse_etdump
from edgevit.compile import CompileOptions, compile_model
from edgevit.estimate import model_work
from edgevit.estimate.model import fit
from edgevit.estimate.observe import observation_from_rows

REPLAY = get_backend("executorch").cost_replay()  # this benchmark validates ExecuTorch's XNNPACK replay

CONFIGS = [  # (model, resolution): three to four per family; TinyViT int8 needs 224 (window padding)
    ("efficientformer_l1", 160), ("efficientformer_l1", 224), ("efficientformer_l3", 224),
    ("efficientformerv2_s0", 224), ("efficientformerv2_s1", 224), ("efficientformerv2_s2", 224),
    ("tiny_vit_5m_224", 224), ("tiny_vit_11m_224", 224), ("tiny_vit_21m_224", 224),
    ("shvit_s1", 224), ("shvit_s2", 224), ("shvit_s3", 224), ("shvit_s4", 256),
]
PRECISIONS = ("fp32", "int8")
BAND = 0.15


def _sources_key(*patterns: str) -> str:
    """A hash of the sources that decide what gets built, so a changed pipeline rebuilds its artifacts."""
    import edgevit

    digest = hashlib.sha256(f"{torch.__version__} {version('executorch')}".encode())
    base = Path(edgevit.__file__).parent
    for pattern in patterns:
        for path in sorted(base.glob(pattern)):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


_BUILD = ("models/**/*.py", "backends/executorch/*.py", "quantization/*.py", "compile/pipeline.py",
          "compile/capture.py")


def compile_all(root: Path, configs, precisions, log) -> list[dict]:
    key = _sources_key(*_BUILD)
    entries = []
    for precision in precisions:
        for model, res in configs:
            out_root = root / "artifacts" / key / f"{precision}-{res}"
            folder = out_root / f"{model}-host"
            if not (folder / "model.pte").exists():
                started = time.perf_counter()
                compile_model(CompileOptions(model=model, device="host", backend="executorch", precision=precision,
                                             input_shape=f"1,3,{res},{res}", output_root=out_root, num_calib=8,
                                             num_verify=2, min_sqnr=-1e9, min_cosine=-1.0))
                log(f"compiled {model} {res} {precision} in {time.perf_counter() - started:.0f} s")
            manifest = json.loads((folder / "manifest.json").read_text())
            entries.append({"model": model, "res": res, "precision": precision, "family": manifest["model"]["family"],
                            "artifact": folder / "model.pte", "shape": (1, 3, res, res)})
    return entries


def work_items(root: Path, entry: dict) -> ModelWork:
    """The work items of an artifact's model, cached by the graph walker's source (it is deterministic)."""
    key = _sources_key(*_BUILD, "estimate/*.py")
    cache = root / "work" / key / f"{entry['model']}-{entry['res']}-{entry['precision']}.json"
    if cache.exists():
        data = json.loads(cache.read_text())
        items = [WorkItem(**{**i, "gemm": tuple(i["gemm"]) if i["gemm"] else None}) for i in data["items"]]
        return ModelWork(data["model"], tuple(data["input_shape"]), data["precision"], items)
    work = model_work(entry["model"], entry["precision"], entry["shape"], replay=REPLAY)
    atomic_write_json(cache, work.as_dict())
    return work


def measure(entries: list[dict], rounds: int, warmup: int, log) -> None:
    """Round-robin: per round, each artifact once plain (timed) and once with ETDump on, shuffled order."""
    from executorch.extension.pybindings import portable_lib

    from edgevit.backends.executorch.runtime import load_program

    portable_lib._unsafe_reset_threadpool(1)
    for e in entries:
        e["data"] = e["artifact"].read_bytes()
        e["plain"] = load_program(e["data"], threads=1)
        e["traced"] = portable_lib._load_for_executorch_from_buffer(e["data"], enable_etdump=True)
        e["x"] = torch.randn(e["shape"], generator=torch.Generator().manual_seed(0))
        e["wall"], e["cpu"] = [], []
    order = list(range(len(entries)))
    rng = random.Random(0)
    with torch.no_grad():
        for r in range(warmup + rounds):
            rng.shuffle(order)
            for i in order:
                e = entries[i]
                wall0, cpu0 = time.perf_counter(), time.thread_time()
                e["plain"](e["x"])
                cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
                if r >= warmup:
                    e["wall"].append(wall * 1e3)
                    e["cpu"].append(cpu * 1e3)
                e["traced"].forward([e["x"]])
            if (r + 1) % 10 == 0:
                log(f"round {r + 1}/{warmup + rounds}")
    for e in entries:
        path = Path(f"/tmp/edgevit-bench-estimate-{id(e)}.etdump")
        e["traced"].write_etdump_result_to_file(str(path))
        e["etdump"] = path.read_bytes()
        path.unlink()
        del e["traced"], e["plain"], e["data"]


def _key(e: dict) -> str:
    return f"{e['model']}-{e['res']}-{e['precision']}"


def save_measurements(root: Path, entries: list[dict], warmup: int) -> None:
    """Keep the raw measurements (ETDumps, times), so the fit can be re-run without measuring (--reuse)."""
    for e in entries:
        atomic_write_bytes(root / "measured" / f"{_key(e)}.etdump", e["etdump"])
    atomic_write_json(root / "measured" / "times.json", {
        "warmup": warmup, "times": {_key(e): {"wall_ms": e["wall"], "cpu_ms": e["cpu"]} for e in entries}})


def load_measurements(root: Path, entries: list[dict]) -> int:
    data = json.loads((root / "measured" / "times.json").read_text())
    for e in entries:
        e["etdump"] = (root / "measured" / f"{_key(e)}.etdump").read_bytes()
        e["wall"], e["cpu"] = data["times"][_key(e)]["wall_ms"], data["times"][_key(e)]["cpu_ms"]
    return data["warmup"]


def leave_one_family_out(entries: list[dict]) -> list[dict]:
    rows = []
    families = sorted({e["family"] for e in entries})
    for family in families:
        calib = [e["obs"] for e in entries if e["family"] != family]
        model = fit(calib, "host")
        for e in (e for e in entries if e["family"] == family):
            p = model.predict(e["work"])
            measured, wall = statistics.median(e["cpu"]), statistics.median(e["wall"])
            rows.append({"family": family, "model": e["model"], "res": e["res"], "precision": e["precision"],
                         "measured_ms": measured, "wall_ms": wall, "wall_min_ms": min(e["wall"]),
                         "predicted_ms": p.total_ms, "error": p.total_ms / measured - 1,
                         "error_wall": p.total_ms / wall - 1,
                         "calibrated_on": sorted(f for f in families if f != family),
                         "fit": {"tile": [model.tile_m, model.tile_n],
                                 "dispatch_us": {k: v * 1e6 for k, v in model.dispatch_s.items()},
                                 "call_ms": {k: v * 1e3 for k, v in model.call_s.items()},
                                 "unprofiled": model.unprofiled}})
    return rows


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 6.0), dpi=120)
    lo = min(min(r["measured_ms"], r["predicted_ms"]) for r in rows) * 0.8
    hi = max(max(r["measured_ms"], r["predicted_ms"]) for r in rows) * 1.25
    xs = [lo, hi]
    ax.plot(xs, xs, color="black", lw=0.8)
    ax.fill_between(xs, [x * (1 - BAND) for x in xs], [x * (1 + BAND) for x in xs], color="0.9", label="±15%")
    colors = dict(zip(sorted({r["family"] for r in rows}), ["tab:blue", "tab:orange", "tab:green", "tab:red"]))
    for family, color in colors.items():
        for precision, marker in (("fp32", "o"), ("int8", "s")):
            pts = [r for r in rows if r["family"] == family and r["precision"] == precision]
            if pts:
                ax.scatter([r["measured_ms"] for r in pts], [r["predicted_ms"] for r in pts], c=color, marker=marker,
                           s=36, edgecolors="black", linewidths=0.4, label=f"{family} {precision}")
    within = sum(abs(r["error"]) <= BAND for r in rows)
    ax.set(xscale="log", yscale="log", xlim=xs, ylim=xs, xlabel="measured median (ms, CPU time per inference)",
           ylabel="predicted (ms)")
    ax.set_title(f"edgevit estimate on host, each family predicted by a fit on the other three:\n"
                 f"{within}/{len(rows)} within ±15%", fontsize=10)
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    ticks = [t for t in (0.5, 1, 2, 5, 10, 20, 50, 100, 200) if lo <= t <= hi]
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
        axis.set_ticks(ticks)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40, help="timed round-robin rounds")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--root", type=Path, default=Path("out/estimate-bench"), help="artifact cache and results")
    parser.add_argument("--models", nargs="+", help="only these zoo models (default: all configs)")
    parser.add_argument("--json", type=Path, help="also write the JSON report here")
    parser.add_argument("--reuse", action="store_true", help="fit and predict from the last run's measurements")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {msg}", file=sys.stderr, flush=True)

    configs = [c for c in CONFIGS if not args.models or c[0] in args.models]
    entries = compile_all(args.root, configs, PRECISIONS, log)
    log(f"{len(entries)} artifacts ready")
    for e in entries:
        e["work"] = work_items(args.root, e)
    log("work items ready")
    if args.reuse:
        warmup = load_measurements(args.root, entries)
    else:
        measure(entries, args.rounds, args.warmup, log)
        save_measurements(args.root, entries, warmup := args.warmup)
    for e in entries:
        parsed = parse_etdump(e.pop("etdump"), warmup=warmup, source=str(e["artifact"]))
        delegate = sum(d["median_ms"] for d in parsed.delegate_calls if d.get("median_ms") is not None)
        e["obs"] = observation_from_rows(e["work"], REPLAY, [(r.name, r.median_ms) for r in parsed.ops],
                                         delegate or None, statistics.median(e["cpu"]), str(e["artifact"]))
    rows = leave_one_family_out(entries)
    log("fitted and predicted")

    print("| held-out family | model | res | precision | measured median ms | predicted ms | error "
          "| wall-clock median ms |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['family']} | {r['model']} | {r['res']} | {r['precision']} | {r['measured_ms']:.2f} | "
              f"{r['predicted_ms']:.2f} | {r['error']:+.1%} | {r['wall_ms']:.2f} |")
    summary = {}
    for name, subset in [("all", rows), *((p, [r for r in rows if r["precision"] == p]) for p in PRECISIONS)]:
        hits = sum(abs(r["error"]) <= BAND for r in subset)
        summary[name] = {"within_15pct": hits, "predictions": len(subset), "fraction": hits / len(subset),
                         "median_abs_error": statistics.median(abs(r["error"]) for r in subset),
                         "within_15pct_of_wall_clock": sum(abs(r["error_wall"]) <= BAND for r in subset)}
    for name, s in summary.items():
        print(f"{name}: {s['within_15pct']}/{s['predictions']} within ±15% of the measured median "
              f"({s['fraction']:.0%}; median |error| {s['median_abs_error']:.1%}); against the wall-clock median: "
              f"{s['within_15pct_of_wall_clock']}/{s['predictions']}")
    load = statistics.median(r["wall_ms"] / r["measured_ms"] for r in rows)
    print(f"machine load: wall-clock median / CPU-time median = {load:.2f} (1.00 on an idle core)")
    full = fit([e["obs"] for e in entries], "host")
    skipped = full.fit_report["skipped"]
    print(f"graph walk vs ETDump: {full.fit_report['aligned_ops']} operators paired kind by kind; "
          + ("every kind's count matches in every model" if not skipped else
             "kinds left out of the fit (counts differ): " + "; ".join(f"{Path(k).parent.name}: {', '.join(v)}"
                                                                       for k, v in skipped.items())))
    full.fit_report["threads"] = 1
    report = {"rounds": len(entries[0]["wall"]), "threads": 1, "alignment": full.fit_report, "band": BAND,
              "summary": summary, "rows": rows,
              "measured": "median over the rounds of this thread's CPU time per inference (time.thread_time; "
                          "one runtime thread runs inline); wall_ms: the wall-clock median of the same calls",
              "wall_over_cpu": load,
              "calibration_all_families": full.to_json(),
              "seconds": round(time.perf_counter() - started, 1),
              "per_operator": {str(e["artifact"]): {"work_items": len(e["work"].items), "events": len(e["obs"].events)}
                               for e in entries}}
    atomic_write_json(args.root / "estimate.json", report)
    if args.json:
        atomic_write_json(args.json, report)
    full.save(args.root / "calibration-host.json")
    chart(rows, args.root / "estimate.png")
    print(f"report: {args.root / 'estimate.json'}  chart: {args.root / 'estimate.png'}  "
          f"calibration (all four families): {args.root / 'calibration-host.json'}  ({report['seconds']:.0f} s)")
    return 0 if summary["all"]["fraction"] >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
