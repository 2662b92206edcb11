"""``edgevit profile``: run a compiled artifact on a device with the runtime's profiler on, and report.

In data-flow order: read the artifact folder (manifest.json) -> reach the device (a :class:`Target`)
-> run ``warmup + runs`` times -> refuse an artifact built for another device -> parse (ETDump for a
.pte, per-op rows for a .tflite) -> one report dict -> ``ARTIFACT_DIR/profiles/DEVICE-TIMESTAMP.{json,md,png}``,
never overwriting an earlier profile.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import platform
import re
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..errors import EdgevitError
from .via import DeviceRun, get_target_class

__all__ = ["ProfileOptions", "profile_artifact", "read_artifact", "check_device", "module_group", "PROFILE_VERSION"]

PROFILE_VERSION = 1
MODULE_DEPTH = 4  # "stages.2.blocks.0": a block of the zoo models; deeper paths are one op each


@dataclass
class ProfileOptions:
    artifact_dir: Path
    via: str = "local"
    runs: int = 20
    warmup: int = 3
    threads: int = 1
    force: bool = False                               # profile even if the device is not the manifest's
    target_kwargs: dict = field(default_factory=dict)  # serial_id/runner (adb), port/baud (serial)


class _Silent:  # compile.SilentProgress, without importing the compile pipeline
    @contextlib.contextmanager
    def stage(self, description: str, total: int | None = None):
        yield lambda n=1: None


def _load_targets() -> None:
    """Register every target module that exists (adb and serial live in their own files)."""
    for name in ("local", "adb", "serial"):
        if importlib.util.find_spec(f"{__package__}.via.{name}") is not None:
            importlib.import_module(f"{__package__}.via.{name}")


def read_artifact(folder: Path) -> tuple[dict, Path]:
    """The manifest and the artifact file of a folder written by ``edgevit compile``."""
    folder = Path(folder)
    hint = "Give the folder `edgevit compile` wrote, e.g. out/efficientformer_l1-pixel8."
    if not folder.is_dir():
        raise EdgevitError(f"{folder} is not a folder. {hint}")
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise EdgevitError(f"{folder} is not an artifact folder: it has no manifest.json. {hint}")
    try:
        manifest = json.loads(manifest_path.read_text())
        artifact = folder / manifest["artifact"]["file"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EdgevitError(f"{manifest_path} is not a readable edgevit manifest ({type(e).__name__}: {e}). "
                           "Recompile the artifact with `edgevit compile`.") from None
    if artifact.suffix not in (".pte", ".tflite"):
        raise EdgevitError(f"{manifest_path} names {artifact.name}, which is neither a .pte nor a .tflite.")
    if not artifact.is_file():
        raise EdgevitError(f"{folder} lists {artifact.name} in manifest.json but the file is missing. "
                           "Recompile the artifact with `edgevit compile`.")
    return manifest, artifact


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def check_device(manifest: dict, device_info: dict, force: bool) -> str | None:
    """Refuse an artifact built for another device; the reason it was allowed anyway under --force."""
    wanted = manifest.get("device") or {}
    name, display = wanted.get("name", ""), wanted.get("display_name", "")
    if device_info.get("profile"):  # the device says which profile it is (the serial agent, an adb mapping)
        found, same = device_info["profile"], device_info["profile"] == name
    elif device_info.get("model"):  # what the device calls itself (adb: ro.product.model)
        found = device_info["model"]
        same = _norm(found) in (_norm(name), _norm(display)) or (_norm(found) and _norm(found) in _norm(display))
    else:
        return None  # this machine, or a device that does not say: nothing to compare
    if same:
        return None
    message = (f"The artifact was compiled for '{name}' ({display}) but the device is '{found}'. Its kernels, "
               f"threads and memory budget were chosen for '{name}'.")
    if not force:
        raise EdgevitError(message + " Compile for this device (`edgevit compile MODEL --device ...`), or pass "
                           "--force to profile it anyway.")
    return message + " Profiled anyway (--force)."


def module_group(path: str | None, depth: int = MODULE_DEPTH) -> str:
    if not path:
        return "(no module: layout/quantize)"  # input layout transposes, (de)quantize at the graph edges
    return ".".join(path.split(".")[:depth])


def _summary(times: list[float]) -> dict:
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {"runs": len(times), "min": min(times), "median": statistics.median(times), "p90": p90,
            "mean": statistics.fmean(times), "times": [round(t, 4) for t in times]}


def _pte_rows(run: DeviceRun, artifact: Path, folder: Path, warmup: int, notes: list[str]):
    from .etdump import parse_etdump

    if not run.etdump:
        raise EdgevitError("The device brought back no ETDump. The runner must be ExecuTorch's executor_runner "
                           "built with -DEXECUTORCH_ENABLE_EVENT_TRACER=ON (or edgevit's runner); see the "
                           "README's Profiling section.")
    etrecord = folder / "etrecord.bin"
    parsed = parse_etdump(run.etdump, warmup=warmup, etrecord=etrecord if etrecord.exists() else None,
                          pte=artifact.read_bytes(), source=f"The ETDump of {artifact}")
    notes.extend(parsed.notes)
    n = len(parsed.times_ms)
    rows = [{"name": r.name, "op_type": r.op_type, "delegate": r.delegate, "module": r.module,
             "module_type": r.module_type, "ms": r.median_ms, "mean_ms": r.total_ms / n} for r in parsed.ops]
    extra = {"timing_source": "ETDump Method::execute events",
             "op_timing": "ETDump per-op events: XNNPACK's profiler inside the delegate (whole microseconds), "
                          "kernel events outside it; ms = median over the timed runs (robust to a busy machine)",
             "module_mapping": parsed.module_mapping, "init_ms": parsed.init_ms,
             "delegate_calls": [{**d, "mean_ms": d["total_ms"] / d["calls"] if d["calls"] else None}
                                for d in parsed.delegate_calls],
             "warmup_times_ms": [round(t, 4) for t in parsed.warmup_times_ms]}
    if run.times_ms:
        extra["runner_wall_ms"] = _summary(run.times_ms)
    return parsed.times_ms, parsed.load_ms if run.load_ms is None else run.load_ms, rows, extra


def _tflite_rows(run: DeviceRun, notes: list[str]):
    if run.op_profile is None or not run.times_ms:
        raise EdgevitError("The device brought back no LiteRT timings for the .tflite; run the profile again.")
    rows, failed = [], [r for r in run.op_profile if r.get("error")]
    for r in run.op_profile:
        if r.get("median_ms") is not None:
            rows.append({"name": r["name"], "op_type": r["op_type"], "delegate": None, "module": r.get("module"),
                         "module_type": None, "ms": r["median_ms"]})
    if failed:
        notes.append(f"{len(failed)} operator(s) could not run alone and have no time: "
                     + ", ".join(f"{r['name']} ({r['error']})" for r in failed[:5]))
    extra = {"timing_source": "wall clock around Interpreter.invoke()",
             "op_timing": "LiteRT has no op profiler in Python: median of the model cut after operator k minus "
                          "cut after k-1, same interpreter, XNNPACK and threads (PADs XNNPACK folds count on the "
                          "convolution); ms = that difference",
             "module_mapping": "tensor names written by litert-torch", "init_ms": None, "delegate_calls": []}
    return run.times_ms, run.load_ms, rows, extra


def _aggregate(rows: list[dict], key) -> list[dict]:
    groups: dict = defaultdict(lambda: {"ms": 0.0, "ops": 0})
    for r in rows:
        g = groups[key(r)]
        g["ms"] += r["ms"]
        g["ops"] += 1
    return sorted(({"name": k, **v} for k, v in groups.items()), key=lambda g: -g["ms"])


def _versions(artifact: Path) -> dict:
    names = ("executorch",) if artifact.suffix == ".pte" else ("ai-edge-litert",)
    found = {"edgevit": version("edgevit"), "python": platform.python_version()}
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def profile_artifact(opts: ProfileOptions, progress=None) -> dict:
    progress = progress or _Silent()
    if opts.runs < 1 or opts.warmup < 0 or opts.threads < 1:
        raise EdgevitError(f"--runs must be at least 1, --warmup at least 0 and --threads at least 1 "
                           f"(got {opts.runs}, {opts.warmup}, {opts.threads}).")
    folder = Path(opts.artifact_dir)
    manifest, artifact = read_artifact(folder)
    from .report import check_writable, write_profile

    check_writable(folder / "profiles")  # before the slow run
    _load_targets()
    target = get_target_class(opts.via)(**opts.target_kwargs)
    with progress.stage(f"asking the device ({opts.via}) what it is"):
        identity = target.identify()
    forced = check_device(manifest, identity, opts.force)  # before the upload and the run
    started = time.time()
    run = target.run(artifact, runs=opts.runs, warmup=opts.warmup, threads=opts.threads, progress=progress)
    if not identity:
        forced = check_device(manifest, run.device_info, opts.force)
    notes = [forced] if forced else []
    with progress.stage("parsing the profile"):
        if artifact.suffix == ".pte":
            times, load_ms, rows, extra = _pte_rows(run, artifact, folder, opts.warmup, notes)
        else:
            times, load_ms, rows, extra = _tflite_rows(run, notes)
    wall = _summary(times)
    for r in rows:
        r["share"] = r["ms"] / wall["median"] if wall["median"] else None
    op_types = _aggregate(rows, lambda r: r["op_type"])
    modules = _aggregate(rows, lambda r: module_group(r["module"]))
    for group in (*op_types, *modules):
        group["share"] = group["ms"] / wall["median"] if wall["median"] else None
    report = {
        "profile_version": PROFILE_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "artifact": {"folder": str(folder), "file": artifact.name, "sha256": manifest["artifact"].get("sha256"),
                     "model": manifest.get("model", {}).get("name"), "device": manifest.get("device", {}).get("name"),
                     "backend": manifest.get("backend", {}).get("name"), "precision": manifest.get("precision"),
                     "input_shape": (manifest.get("inputs") or [{}])[0].get("shape")},
        "target": {**target.describe(), "device_info": run.device_info},
        "settings": {"via": opts.via, "runs": opts.runs, "warmup": opts.warmup, "threads": opts.threads,
                     "force": opts.force},
        "wall_ms": wall,
        "load_ms": load_ms,
        "peak_memory_bytes": run.peak_memory_bytes,
        **extra,
        "ops_total_ms": sum(r["ms"] for r in rows),
        "op_types": op_types,
        "modules": modules,
        "module_depth": MODULE_DEPTH,
        "ops": rows,
        "host_versions": _versions(artifact),
        "notes": notes,
        "runner_log_tail": run.log[-2000:],
    }
    report["files"] = write_profile(folder / "profiles", _device_label(opts.via, run), started, report)
    return report


def _device_label(via: str, run: DeviceRun) -> str:
    info = run.device_info
    label = info.get("profile") or info.get("model") or info.get("serial") or ("host" if via == "local" else via)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(label)).strip("-") or via
