"""``edgevit estimate``: predicted latency of a model on a device, per stage, without running it there.

The backend's cost replay (``Backend.cost_replay()``; ExecuTorch: XNNPACK's lowering, its fusions and
layouts) turns a model into the operators its runtime will run, with MACs and bytes; ``model`` prices each
operator from the device's figures and calibrates those figures from per-operator profiles of the device
(``edgevit calibrate``). Calibrations are JSON
files, one per device: ``CALIBRATION_DIR/DEVICE.json`` (default ``out/calibration/``, next to the
artifacts whose profiles they come from); measured host peaks go to ``CALIBRATION_DIR/host-peaks.json``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..backends.cost import ModelWork, WorkItem
from ..devices import get_device
from ..errors import EdgevitError
from .model import CostModel, Observation, Prediction, fit, uncalibrated
from .observe import find_profiles, observation_from_profile
from .work import cost_backend, model_work

__all__ = [
    "DEFAULT_CALIBRATION_DIR",
    "CostModel",
    "Estimate",
    "ModelWork",
    "Observation",
    "WorkItem",
    "calibrate",
    "cost_backend",
    "cost_model_for",
    "estimate",
    "fit",
    "model_work",
]

DEFAULT_CALIBRATION_DIR = Path("out/calibration")


@dataclass
class Estimate:
    model: str
    device: str
    precision: str
    input_shape: tuple[int, ...]
    threads: int
    total_ms: float
    stages: list[dict]                # name, ops, macs, ms, share
    kinds: list[dict]                 # kind/precision, ops, ms, basis
    dispatch_ms: float
    call_ms: float
    figures: str                      # where the device figures come from (one line)
    partitions: int = 1               # delegate calls per inference
    outside_ops: int = 0              # operators outside the delegate (portable kernels)
    outside_ms: float = 0.0
    calibration_file: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _profile_model(profile, calibration_dir: Path) -> tuple[CostModel | None, str]:
    """The uncalibrated model from the profile's peaks (or, for host, measured peaks), if any."""
    bandwidth = profile.memory.bandwidth_gbps * 1e9 if profile.memory.bandwidth_gbps else None
    if profile.compute is not None and any(profile.compute.peak_gmacs_per_s.values()):
        peaks = {p: (v * 1e9 if v else None) for p, v in profile.compute.peak_gmacs_per_s.items()}
        basis = f"profile {profile.compute.basis} peaks"
        return uncalibrated(profile.name, peaks, bandwidth, basis), basis
    measured = calibration_dir / f"{profile.name}-peaks.json"
    if measured.exists():
        data = json.loads(measured.read_text())
        peaks = {p: v * 1e9 for p, v in data["peak_gmacs_per_s"].items() if v}
        bw = data.get("bandwidth_gbps")
        return uncalibrated(profile.name, peaks, bw * 1e9 if bw else bandwidth,
                            f"measured peaks ({measured})"), f"measured peaks ({measured})"
    return None, ""


def cost_model_for(profile, calibration: Path | None = None,
                   calibration_dir: Path = DEFAULT_CALIBRATION_DIR) -> tuple[CostModel, str, str | None]:
    """The cost model for a device: its calibration if there is one, topped up from its profile figures.

    Returns the model, a one-line description of its figures, and the calibration file used (or None).
    """
    calibration_dir = Path(calibration_dir)
    base, base_basis = _profile_model(profile, calibration_dir)
    path = Path(calibration) if calibration is not None else calibration_dir / f"{profile.name}.json"
    if calibration is not None and not path.exists():
        raise EdgevitError(f"Calibration file {path} does not exist; write one with `edgevit calibrate "
                           f"--device {profile.name} DIR` or leave --calibration out.")
    if path.exists():
        model = CostModel.load(path)
        if model.device != profile.name:
            raise EdgevitError(f"{path} calibrates device '{model.device}', not '{profile.name}'. Pass the "
                               f"calibration of '{profile.name}' (or none).")
        if base is not None:
            for key, cost in base.ops.items():
                model.ops.setdefault(key, cost)
        figures = f"calibrated from {len(model.sources)} profile(s) ({path})" + (
            f"; kinds it has not seen: {base_basis}" if base is not None else "")
        return model, figures, str(path)
    if base is None:
        raise EdgevitError(
            f"Device '{profile.name}' has no compute figures (its profile's `compute` is empty) and there is no "
            f"calibration for it ({path}). Profile a few models on it and run `edgevit calibrate --device "
            f"{profile.name} out/`" + (", or measure this machine once with --measure-peaks"
                                       if profile.name == "host" else ", or add peak MAC/s to its profile") + ".")
    return base, f"uncalibrated: {base_basis}", None


def estimate(model: str, device: str, precision: str, input_shape: tuple[int, ...] | None = None,
             calibration: Path | None = None, calibration_dir: Path = DEFAULT_CALIBRATION_DIR,
             profile_dirs: list[Path] | None = None, num_classes: int | None = None,
             backend: str = "auto") -> Estimate:
    profile = get_device(device, profile_dirs)
    _, replay = cost_backend(profile, backend)
    if precision not in replay.precisions:
        raise EdgevitError(f"Unknown precision '{precision}'; the latency model covers "
                           f"{', '.join(replay.precisions)}.")
    cost, figures, used = cost_model_for(profile, calibration, calibration_dir)  # before the slow export
    work = model_work(model, precision, input_shape, num_classes, replay)
    prediction = cost.predict(work)
    return _summarize(work, profile.name, cost, prediction, figures, used)


def _summarize(work: ModelWork, device: str, cost: CostModel, p: Prediction, figures: str,
               used: str | None) -> Estimate:
    stage_ops, stage_macs, kind_ops = {}, {}, {}
    for item in work.items:
        stage_ops[item.stage] = stage_ops.get(item.stage, 0) + 1
        if item.gemm is not None or item.category == "dwconv":
            stage_macs[item.stage] = stage_macs.get(item.stage, 0) + item.macs
        key = f"{item.category}/{item.precision}"
        kind_ops[key] = kind_ops.get(key, 0) + 1
    total = p.total_ms
    stages = [{"name": s, "ops": stage_ops[s], "macs": stage_macs.get(s, 0), "ms": ms, "share": ms / total}
              for s, ms in p.stages.items()]
    kinds = [{"kind": k, "ops": kind_ops[k], "ms": ms, "basis": p.basis[k]} for k, ms in p.kinds.items()]
    notes = ["one thread on the fastest core (multi-thread scaling is not modelled)"]
    if not cost.calibrated:
        notes.append("uncalibrated: default efficiencies measured on the host applied to this device's peaks; "
                     "calibrate from profiles of the device for figures you can rely on")
    if p.outside_ops:
        outside = sorted({i.op for i in work.items if i.category == "portable"})
        notes.append(f"{p.outside_ops} operator(s) outside the delegate ({', '.join(outside)}): portable kernels, "
                     f"{p.outside_ms:.2f} ms, and {p.partitions} delegate calls instead of one")
    return Estimate(work.model, device, work.precision, tuple(work.input_shape), 1, total, stages, kinds,
                    p.dispatch_ms, p.call_ms, figures, p.partitions, p.outside_ops, p.outside_ms,
                    used, notes)


def calibrate(roots: list[Path], device: str, threads: int = 1, progress=None) -> tuple[CostModel, list[str]]:
    """Fit a device's cost model from the profiles under ``roots``; returns it and the profiles passed over."""

    paths, passed = find_profiles(roots, device, threads)
    if not paths:
        raise EdgevitError(f"No profiles of ExecuTorch artifacts for device '{device}' ({threads} thread(s)) under "
                           f"{', '.join(map(str, roots))}" + (f" ({len(passed)} others passed over)" if passed else "")
                           + ". Run `edgevit profile ARTIFACT_DIR` on models compiled for it first.")
    observations = []
    for path in paths:
        if progress is not None:
            with progress.stage(f"rebuilding the graph of {path.parent.parent.name}"):
                observations.append(observation_from_profile(path))
        else:
            observations.append(observation_from_profile(path))
    return fit(observations, device), passed
