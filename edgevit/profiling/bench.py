"""``edgevit bench``: every backend x precision a device runs, compiled, verified and timed side by side.

Each artifact goes through the normal compile pipeline (so it is verified against fp32 eager and gets a
manifest), then all of them, plus torch eager fp32, are timed round-robin: every round runs each
candidate once, so machine noise hits all of them alike. Peak memory is measured per artifact in a
fresh process (``_memprobe``). Results: a table, ``bench.json`` and ``bench.png`` (latency vs size).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .._io import atomic_write_bytes, atomic_write_json, ensure_writable_dir
from ..backends import get_backend
from ..compile import DEFAULT_THRESHOLDS, Agreement, CompileOptions, compile_model
from ..devices import get_device
from ..errors import EdgevitError
from ..models import parse_input_shape, resolve_model
from ..progress import SilentProgress, StageProgress
from ..timing import p90, time_round_robin

__all__ = ["BenchOptions", "BenchRow", "run_bench", "pick_fastest"]


@dataclass
class BenchOptions:
    model: str
    device: str = "host"
    threads: list[int] = field(default_factory=lambda: [1])
    backends: list[str] | None = None        # default: every backend the device profile lists
    precisions: list[str] | None = None      # default: every precision each backend offers
    rounds: int = 20
    warmup: int = 3
    input_shape: str | None = None
    num_classes: int | None = None           # classifier size, when not the zoo default
    num_calib: int = 32
    output_root: Path = Path("out/bench")
    profile_dirs: list[Path] = field(default_factory=list)
    measure_memory: bool = True


@dataclass
class BenchRow:
    backend: str                    # "torch" for the eager reference
    precision: str
    threads: int
    median_ms: float | None = None
    p90_ms: float | None = None
    size_bytes: int | None = None
    peak_memory_bytes: int | None = None   # the runtime's RSS growth to run the artifact
    sqnr_db: float | None = None
    cosine: float | None = None
    top1_agreement: float | None = None
    passed: bool | None = None             # met the verification thresholds
    artifact: str | None = None
    error: str | None = None               # why this candidate has no numbers

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.precision}"


def _peak_memory(backend: str, artifact: Path, shape: tuple[int, ...], threads: int) -> int | None:
    cmd = [sys.executable, "-m", "edgevit.profiling._memprobe", backend, str(artifact), *map(str, shape), "5",
           str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return None
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    return max(0, figures["peak_rss_bytes"] - figures["baseline_rss_bytes"])


def pick_fastest(rows: list[BenchRow]) -> BenchRow | None:
    """The ``--backend auto`` rule for a benchmarked device: the fastest artifact that passed verification."""
    ok = [r for r in rows if r.backend != "torch" and r.passed and r.median_ms is not None]
    return min(ok, key=lambda r: r.median_ms) if ok else None


@dataclass
class _Candidate:
    """One backend x precision, compiled and verified once (or the reason it could not be)."""

    backend: str
    precision: str
    artifact: Path | None = None
    manifest: dict | None = None
    error: str | None = None


def _build_candidates(opts: BenchOptions, device: str, backends: list[str], out_dir: Path,
                      progress: StageProgress) -> list[_Candidate]:
    """Every candidate through the normal compile pipeline; a failure is a row with its reason."""
    candidates = []
    for backend_name in backends:
        backend = get_backend(backend_name)
        for precision in opts.precisions or backend.precisions:
            if precision not in backend.precisions:
                continue
            with progress.stage(f"compiling {backend_name}/{precision}"):
                try:
                    result = compile_model(CompileOptions(
                        model=opts.model, device=device, backend=backend_name, precision=precision,
                        input_shape=opts.input_shape, num_classes=opts.num_classes, num_calib=opts.num_calib,
                        output_root=out_dir / f"{backend_name}-{precision}", profile_dirs=opts.profile_dirs,
                        min_sqnr=-1e9, min_cosine=-1.0))  # record the numbers; judge below, don't abort
                    candidates.append(_Candidate(backend_name, precision, result.artifact, result.manifest))
                except EdgevitError as e:
                    candidates.append(_Candidate(backend_name, precision, error=str(e)))
    return candidates


def _time_candidates(opts: BenchOptions, reference, shape: tuple[int, ...], candidates: list[_Candidate],
                     threads: int, peak_memory: dict, progress: StageProgress) -> list[BenchRow]:
    """One row per candidate (and torch eager) at ``threads``, all timed round-robin in one run. torch's
    thread count is put back afterwards: it is process-wide, and what runs after a bench must not inherit it."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _timed_rows(opts, reference, shape, candidates, threads, peak_memory, progress)
    finally:
        torch.set_num_threads(before)


def _timed_rows(opts: BenchOptions, reference, shape: tuple[int, ...], candidates: list[_Candidate],
                threads: int, peak_memory: dict, progress: StageProgress) -> list[BenchRow]:
    runners = {("torch", "fp32"): reference}
    for c in candidates:
        if c.artifact is not None:
            runners[(c.backend, c.precision)] = get_backend(c.backend).load(c.artifact, threads)
    with progress.stage(f"timing {len(runners)} candidates, {threads} thread(s)", total=opts.rounds) as advance:
        times = time_round_robin(runners, torch.zeros(shape), opts.rounds, opts.warmup)
        advance(opts.rounds)
    ref = times.pop(("torch", "fp32"))
    rows = [BenchRow("torch", "fp32", threads, statistics.median(ref), p90(ref))]
    for c in candidates:
        row = BenchRow(c.backend, c.precision, threads, error=c.error)
        if c.artifact is not None:
            ts, v = times[(c.backend, c.precision)], c.manifest["verification"]
            row.median_ms, row.p90_ms = statistics.median(ts), p90(ts)
            row.size_bytes, row.artifact = c.manifest["artifact"]["size_bytes"], str(c.artifact)
            row.sqnr_db, row.cosine, row.top1_agreement = v["sqnr_db"], v["cosine"], v["top1_agreement"]
            row.passed = not DEFAULT_THRESHOLDS[c.precision].failures(_agreement_of(v))
            if opts.measure_memory and c.artifact not in peak_memory:  # once per artifact: threads barely matter
                with progress.stage(f"peak memory {c.backend}/{c.precision}"):
                    peak_memory[c.artifact] = _peak_memory(c.backend, c.artifact, shape, threads)
            row.peak_memory_bytes = peak_memory.get(c.artifact)
        rows.append(row)
    return rows


def run_bench(opts: BenchOptions, progress: StageProgress | None = None) -> dict:
    progress = progress or SilentProgress()
    profile = get_device(opts.device, opts.profile_dirs)
    if profile.kind == "fpga":
        raise EdgevitError(f"Device '{profile.name}' is an FPGA board; `edgevit bench` times CPU runtimes here. "
                           f"For the accelerator's latency use `edgevit estimate MODEL --device {profile.name}` "
                           "(cycles from its schedule, the counts C-simulation makes).")
    backends = opts.backends or list(profile.compile.backends)
    for name in backends:
        if name not in profile.compile.backends:
            raise EdgevitError(f"Device '{profile.name}' does not run backend '{name}' "
                               f"(its profile lists {', '.join(profile.compile.backends)}).")
    out_dir = ensure_writable_dir(Path(opts.output_root) / f"{opts.model.replace(':', '.')}-{profile.name}")
    resolved = resolve_model(opts.model, parse_input_shape(opts.input_shape), opts.num_classes)
    candidates = _build_candidates(opts, profile.name, backends, out_dir, progress)
    peak_memory: dict[Path, int | None] = {}
    rows = [row for threads in opts.threads
            for row in _time_candidates(opts, resolved.module, resolved.input_shape, candidates, threads,
                                        peak_memory, progress)]
    best = {t: pick_fastest([r for r in rows if r.threads == t]) for t in opts.threads}
    report = {"model": resolved.name, "device": profile.name, "input_shape": list(resolved.input_shape),
              "rounds": opts.rounds, "rows": [asdict(r) | {"label": r.label} for r in rows],
              "auto_choice": {str(t): (b.label if b else None) for t, b in best.items()}}
    atomic_write_json(out_dir / "bench.json", report)
    atomic_write_bytes(out_dir / "bench.png", _chart_png(report))
    report["files"] = {"json": str(out_dir / "bench.json"), "png": str(out_dir / "bench.png")}
    return report


def _agreement_of(v: dict) -> Agreement:
    return Agreement(v["sqnr_db"], v["max_abs_error"], v["cosine"], v["top1_agreement"], v["samples"])


def _chart_png(report: dict) -> bytes:
    """Latency vs artifact size, one point per backend/precision (and thread count)."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    # shape: backend (in the order they appear); colour: precision; red edge: failed verification
    shapes = iter("os^Dv<>p")
    backends = dict.fromkeys(r["backend"] for r in report["rows"] if r["backend"] != "torch")
    markers = {b: next(shapes, "x") for b in backends}
    colours = {"fp32": "tab:blue", "fp16": "tab:green", "int8": "tab:purple", "int8-dynamic": "tab:olive"}
    for row in report["rows"]:
        if row["median_ms"] is None or row["size_bytes"] is None:
            continue
        ax.scatter(row["size_bytes"] / 2**20, row["median_ms"], marker=markers.get(row["backend"], "^"),
                   s=60, color=colours.get(row["precision"], "tab:grey"),
                   edgecolors="black" if row["passed"] else "red", linewidths=1.5)
        ax.annotate(f"{row['label']} {row['threads']}t", (row["size_bytes"] / 2**20, row["median_ms"]),
                    textcoords="offset points", xytext=(5, 4), fontsize=7)
    for row in report["rows"]:
        if row["backend"] == "torch":
            ax.axhline(row["median_ms"], color="grey", linestyle=":", linewidth=1)
            ax.annotate(f"torch eager fp32 ({row['threads']}t)", (0, row["median_ms"]), fontsize=7, color="grey",
                        xycoords=("axes fraction", "data"), xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel("artifact size (MB)")
    ax.set_ylabel("median latency (ms), lower is better")
    legend = ", ".join(f"{m} {b}" for b, m in markers.items())
    ax.set_title(f"{report['model']} on {report['device']}, input {'x'.join(map(str, report['input_shape']))}"
                 f"\n({legend}; colour = precision; red edge = failed verification)", fontsize=9)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
