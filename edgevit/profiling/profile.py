"""``edgevit profile``: run a compiled artifact on a device with the runtime's profiler on, and report.

In data-flow order: read the artifact folder (manifest.json, sha256 checked) -> its backend -> reach the
device (a :class:`Target`) -> refuse an artifact built for another device -> run ``warmup + runs`` times
-> the backend parses what came back (ETDump for a .pte, per-op rows for a .tflite) -> one report dict ->
``ARTIFACT_DIR/profiles/DEVICE-TIMESTAMP.{json,md,png}``, never overwriting an earlier profile.
"""
from __future__ import annotations

import contextlib
import platform
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .._io import ensure_writable_dir
from ..backends import Backend, ParsedProfile, get_backend
from ..errors import EdgevitError
from ..manifest import read_artifact_folder
from ..progress import SilentProgress, StageProgress
from ..timing import summarize
from .report import MODULE_DEPTH, module_group, write_profile
from .via import DeviceRun, get_target_class

__all__ = ["ProfileOptions", "profile_artifact", "check_device", "PROFILE_VERSION"]

PROFILE_VERSION = 1


@dataclass
class ProfileOptions:
    artifact_dir: Path
    via: str = "local"
    runs: int = 20
    warmup: int = 3
    threads: int = 1
    force: bool = False                               # profile even if the device is not the manifest's
    target_kwargs: dict = field(default_factory=dict)  # serial_id/runner (adb), port/baud (serial)


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


def _aggregate(rows: list[dict], key) -> list[dict]:
    groups: dict = defaultdict(lambda: {"ms": 0.0, "ops": 0})
    for r in rows:
        g = groups[key(r)]
        g["ms"] += r["ms"]
        g["ops"] += 1
    return sorted(({"name": k, **v} for k, v in groups.items()), key=lambda g: -g["ms"])


def _versions(backend: Backend) -> dict:
    found = {"edgevit": version("edgevit"), "python": platform.python_version()}
    for name in backend.runtime_packages:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def profile_artifact(opts: ProfileOptions, progress: StageProgress | None = None) -> dict:
    progress = progress or SilentProgress()
    if opts.runs < 1 or opts.warmup < 0 or opts.threads < 1:
        raise EdgevitError(f"--runs must be at least 1, --warmup at least 0 and --threads at least 1 "
                           f"(got {opts.runs}, {opts.warmup}, {opts.threads}).")
    folder = Path(opts.artifact_dir)
    found = read_artifact_folder(folder)  # the sha256 is checked here: a changed file is never run
    manifest, artifact = found.manifest, found.artifact
    backend = get_backend(found.schema.backend.name)
    ensure_writable_dir(folder / "profiles", "the profiles folder",  # before the slow run
                        "make the artifact folder writable or copy it somewhere that is")
    target = get_target_class(opts.via)(**opts.target_kwargs)
    with progress.stage(f"asking the device ({opts.via}) what it is"):
        identity = target.identify()
    forced = check_device(manifest, identity, opts.force)  # before the upload and the run
    started = time.time()
    run = target.run(artifact, backend, runs=opts.runs, warmup=opts.warmup, threads=opts.threads,
                     progress=progress)
    if not identity:
        forced = check_device(manifest, run.device_info, opts.force)
    with progress.stage("parsing the profile"):
        parsed = backend.parse_profile(run, artifact, opts.warmup)
    report = _report(opts, manifest, artifact, backend, target, run, parsed, started,
                     notes=([forced] if forced else []) + parsed.notes)
    report["files"] = write_profile(folder / "profiles", _device_label(opts.via, run), started, report)
    return report


def _report(opts: ProfileOptions, manifest: dict, artifact: Path, backend: Backend, target, run: DeviceRun,
            parsed: ParsedProfile, started: float, notes: list[str]) -> dict:
    """One profile, the same shape for every backend and device."""
    rows = parsed.rows
    wall = summarize(parsed.times_ms)
    for r in rows:
        r["share"] = r["ms"] / wall["median"] if wall["median"] else None
    op_types = _aggregate(rows, lambda r: r["op_type"])
    modules = _aggregate(rows, lambda r: module_group(r["module"]))
    for group in (*op_types, *modules):
        group["share"] = group["ms"] / wall["median"] if wall["median"] else None
    return {
        "profile_version": PROFILE_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "artifact": {"folder": str(opts.artifact_dir), "file": artifact.name,
                     "sha256": manifest["artifact"].get("sha256"),
                     "model": manifest.get("model", {}).get("name"), "device": manifest.get("device", {}).get("name"),
                     "backend": backend.name, "precision": manifest.get("precision"),
                     "input_shape": (manifest.get("inputs") or [{}])[0].get("shape")},
        "target": {**target.describe(), "device_info": run.device_info},
        "settings": {"via": opts.via, "runs": opts.runs, "warmup": opts.warmup, "threads": opts.threads,
                     "force": opts.force},
        "wall_ms": wall,
        "load_ms": parsed.load_ms,
        "peak_memory_bytes": run.peak_memory_bytes,
        **parsed.extra,
        "ops_total_ms": sum(r["ms"] for r in rows),
        "op_types": op_types,
        "modules": modules,
        "module_depth": MODULE_DEPTH,
        "ops": rows,
        "host_versions": _versions(backend),
        "notes": notes,
        "runner_log_tail": run.log[-2000:],
    }


def _device_label(via: str, run: DeviceRun) -> str:
    info = run.device_info
    label = info.get("profile") or info.get("model") or info.get("serial") or ("host" if via == "local" else via)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(label)).strip("-") or via
