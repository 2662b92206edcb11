"""The latency model: what each XNNPACK operator costs on a device, and its calibration from profiles.

Per operator (a :class:`~edgevit.backends.cost.WorkItem`, from the backend's cost replay), one line per
operator kind and precision ("gemm/int8", "softmax/fp32", ...)::

    seconds = units / unit_rate + bytes / bandwidth + weight_bytes / weight_bandwidth + overhead

- ``units`` is the arithmetic: for gemm, igemm and bmm the MACs the microkernel really issues (M and N
  rounded up to its register tile, ``tile_m`` x ``tile_n``), for depthwise convolutions their MACs, for
  softmax and reductions the rows they loop over, for data movement its elements;
- ``bytes`` are the activations read and written (all of its bytes for the non-GEMM kinds), and
  ``weight_bytes`` the GEMM's streamed operand (weights, or bmm's B).

Compute and memory terms add rather than take a roofline ``max``: on the host the sum predicted held-out
families better (README, "Latency model"), and it makes calibration linear least squares with one answer.
A model adds ``dispatch`` per operator, ``call`` per inference and ``delegate_call`` per delegate call
after the first (an op the delegate does not take splits it: ``ModelWork.partitions``), plus an
``unprofiled`` share of the operator time (what the per-operator events leave out), all fitted per model
precision. Operators outside the delegate are their own kind, ``portable/fp32``: scalar kernels priced per
element (MACs for a GEMM), far slower than XNNPACK's.

Uncalibrated, the rates come from the device profile: peak MAC/s x a default efficiency per kind, and
the memory bandwidth x a default fraction (see ``DEFAULT_*``). :func:`fit` calibrates every coefficient
from per-operator profiles of that device: ETDump events are paired with work items kind by kind, in
order, and each kind is fitted by non-negative least squares; a kind with too few measured operators
borrows the pooled fit of the data-movement kinds of its precision.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .._io import atomic_write_json
from ..backends.cost import ModelWork, WorkItem
from ..errors import EdgevitError

__all__ = [
    "CALIBRATION_VERSION",
    "DEFAULT_EFFICIENCY",
    "CostModel",
    "Observation",
    "OpCost",
    "Prediction",
    "align",
    "fit",
    "uncalibrated",
]

CALIBRATION_VERSION = 1
GEMM_LIKE = ("gemm", "igemm", "bmm")
ROW_KINDS = ("softmax", "reduce")
OWN_FIT_ONLY = GEMM_LIKE + ("dwconv", "portable") + ROW_KINDS   # never priced as generic data movement
MIN_OPS = 6                  # fewer measured operators of a kind than this: use the pooled fit
TILES_M = (1, 2, 4, 6, 7, 8, 12, 16)
TILES_N = (1, 4, 8, 16, 32, 64)

# Uncalibrated defaults, from the host: its calibrated rates over its measured XNNPACK peaks
# (`edgevit estimate --device host --measure-peaks`: 119.8 fp32 / 445.1 int8 GMAC/s, 40.9 GB/s; the
# calibration from tools/bench_estimate.py). GEMM-like kernels reach the big-GEMM peak; depthwise
# convolutions a fraction of it (int8 depthwise has no dot-product instructions to use); activations
# stream at about the memory bandwidth, reductions over a row at a tenth of it.
DEFAULT_EFFICIENCY = {"gemm": 1.0, "igemm": 1.0, "bmm": 1.0, "dwconv": 0.35, "dwconv/int8": 0.08}
DEFAULT_BANDWIDTH_SHARE = {"reduce": 0.1}  # everything else: 1.0
DEFAULT_OVERHEAD_S = 0.5e-6
DEFAULT_DISPATCH_S = 1.0e-6
# Portable kernels (outside the delegate), per element or MAC as a share of the fp32 peak: on the host
# (119.8 GMAC/s fp32) ExecuTorch's native_layer_norm, mean and cumsum ran at 1.8-3.7 ns per element
# (`edgevit profile` of two user modules, 2026-11-28), i.e. about 0.003 x peak.
DEFAULT_PORTABLE_EFFICIENCY = 0.003
# Each delegate call after the first: entering and leaving XNNPACK (DELEGATE_CALL of a one-op partition,
# same profiles: 0.8-2.4 µs).
DEFAULT_DELEGATE_CALL_S = 2.0e-6


def _rate(seconds_per: float) -> float | None:
    return 1.0 / seconds_per if seconds_per > 0 else None


@dataclass
class OpCost:
    """Seconds per unit of work, per activation byte, per streamed weight byte, and per call."""

    unit_s: float
    byte_s: float
    weight_byte_s: float
    overhead_s: float
    basis: str                        # "calibrated (N ops)", "pooled fit ...", "profile ..."

    def seconds(self, units: float, nbytes: float, weight_bytes: float) -> float:
        return units * self.unit_s + nbytes * self.byte_s + weight_bytes * self.weight_byte_s + self.overhead_s

    def rates(self) -> dict:
        """The same figures the way people quote them: units/s, bytes/s, µs."""
        return {"units_per_s": _rate(self.unit_s), "bytes_per_s": _rate(self.byte_s),
                "weight_bytes_per_s": _rate(self.weight_byte_s), "overhead_us": self.overhead_s * 1e6}


@dataclass
class Prediction:
    total_ms: float
    stages: dict[str, float]          # ms per model stage (its operators, unprofiled share included)
    kinds: dict[str, float]           # ms per "kind/precision"
    dispatch_ms: float
    call_ms: float
    basis: dict[str, str]             # per kind used: where its figures come from
    partitions: int = 1               # delegate calls per inference
    outside_ops: int = 0              # operators run by portable kernels
    outside_ms: float = 0.0           # their share of total_ms

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class CostModel:
    device: str
    ops: dict[str, OpCost]
    tile_m: int = 1
    tile_n: int = 1
    dispatch_s: dict[str, float] = field(default_factory=dict)    # per operator, per model precision
    call_s: dict[str, float] = field(default_factory=dict)        # per inference, per model precision
    delegate_call_s: dict[str, float] = field(default_factory=dict)  # per delegate call after the first
    unprofiled: dict[str, float] = field(default_factory=dict)    # share added to operator time
    calibrated: bool = False
    sources: list[str] = field(default_factory=list)
    fit_report: dict = field(default_factory=dict)

    def work(self, item: WorkItem) -> tuple[float, float, float]:
        """(units, activation bytes, streamed weight bytes) the cost line of ``item`` sees."""
        if item.category in GEMM_LIKE and item.gemm:
            batch, m, n, k = item.gemm
            units = batch * math.ceil(m / self.tile_m) * self.tile_m * math.ceil(n / self.tile_n) * self.tile_n * k
            return units, item.bytes - item.weight_bytes, batch * item.weight_bytes
        if item.category in ROW_KINDS and item.rows:
            return item.rows, item.bytes, 0
        if item.category == "dwconv":
            return item.macs, item.bytes - item.weight_bytes, item.weight_bytes
        return item.macs, item.bytes, 0

    def cost_of(self, item: WorkItem) -> tuple[OpCost, str]:
        """The cost line for ``item``: its own kind's, else the closest fitted one (and which it is)."""
        key = f"{item.category}/{item.precision}"
        candidates = [key]
        if item.category == "portable":  # never priced as XNNPACK's data movement: ten times off
            candidates.append("portable/fp32")
        else:
            if item.category in ("igemm", "bmm", "dwconv"):
                candidates.append(f"gemm/{item.precision}")
            candidates += [f"movement/{item.precision}", "movement/fp32"]
        for candidate in candidates:
            if candidate in self.ops:
                return self.ops[candidate], candidate
        raise EdgevitError(f"The latency model for '{self.device}' has no figures for {key} operators "
                           f"(it knows {', '.join(sorted(self.ops)) or 'none'}). Calibrate it with profiles "
                           "of models that run them (`edgevit calibrate`), or give the device profile its "
                           "compute figures.")

    def item_seconds(self, item: WorkItem) -> float:
        cost, key = self.cost_of(item)
        if key.startswith("movement/") and item.category in ROW_KINDS:
            return cost.seconds(item.macs, item.bytes, 0)  # priced as plain data movement
        return cost.seconds(*self.work(item))

    def predict(self, work: ModelWork) -> Prediction:
        share = 1.0 + self.unprofiled.get(work.precision, 0.0)
        stages, kinds, basis = defaultdict(float), defaultdict(float), {}
        for item in work.items:
            cost, key = self.cost_of(item)
            ms = self.item_seconds(item) * 1e3 * share
            own = f"{item.category}/{item.precision}"
            stages[item.stage] += ms
            kinds[own] += ms
            basis[own] = cost.basis if key == own else f"{cost.basis}, as {key}"
        dispatch = len(work.items) * self.dispatch_s.get(work.precision, DEFAULT_DISPATCH_S) * 1e3
        partitions = work.partitions()
        call = (self.call_s.get(work.precision, 0.0) + max(partitions - 1, 0)
                * self.delegate_call_s.get(work.precision, DEFAULT_DELEGATE_CALL_S)) * 1e3
        total = sum(stages.values()) + dispatch + call
        outside_ms = sum(ms for kind, ms in kinds.items() if kind.startswith("portable/"))
        return Prediction(total, dict(stages), dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
                          dispatch, call, basis, partitions, work.outside(), outside_ms)

    # ------------------------------------------------------------------------------------- storage
    def to_json(self) -> dict:
        return {"calibration_version": CALIBRATION_VERSION, "device": self.device, "calibrated": self.calibrated,
                "tile_m": self.tile_m, "tile_n": self.tile_n, "dispatch_s": self.dispatch_s,
                "call_s": self.call_s, "delegate_call_s": self.delegate_call_s, "unprofiled": self.unprofiled,
                "ops": {k: {**asdict(v), "rates": v.rates()} for k, v in sorted(self.ops.items())},
                "sources": self.sources, "fit_report": self.fit_report}

    def save(self, path: Path) -> Path:
        return atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> CostModel:
        try:
            data = json.loads(Path(path).read_text())
            if data.get("calibration_version") != CALIBRATION_VERSION:
                raise ValueError(f"calibration_version {data.get('calibration_version')!r}, "
                                 f"expected {CALIBRATION_VERSION}")
            ops = {k: OpCost(**{f: v[f] for f in ("unit_s", "byte_s", "weight_byte_s", "overhead_s", "basis")})
                   for k, v in data["ops"].items()}
            floats = lambda d: {k: float(v) for k, v in d.items()}
            return cls(device=data["device"], ops=ops, tile_m=int(data["tile_m"]), tile_n=int(data["tile_n"]),
                       dispatch_s=floats(data["dispatch_s"]), call_s=floats(data["call_s"]),
                       delegate_call_s=floats(data.get("delegate_call_s", {})),  # absent before 2026-11-28
                       unprofiled=floats(data["unprofiled"]), calibrated=bool(data["calibrated"]),
                       sources=list(data.get("sources", [])), fit_report=data.get("fit_report", {}))
        except OSError as e:
            raise EdgevitError(f"Cannot read the calibration file {path}: {e.strerror or e}.") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise EdgevitError(f"{path} is not an edgevit calibration file ({type(e).__name__}: {e}). "
                               "Write one with `edgevit calibrate`.") from None


# ------------------------------------------------------------------------------------ uncalibrated

def uncalibrated(device: str, peak_macs_per_s: dict[str, float | None], bandwidth_bytes_per_s: float | None,
                 basis: str = "profile") -> CostModel:
    """A model from a device's peak figures and the default efficiencies (no profiles of it)."""
    bandwidth = bandwidth_bytes_per_s
    ops = {}
    for precision, peak in peak_macs_per_s.items():
        if not peak:
            continue
        for kind in (*GEMM_LIKE, "dwconv", *ROW_KINDS, "movement"):
            share = DEFAULT_BANDWIDTH_SHARE.get(kind, 1.0)
            per_byte = 1.0 / (bandwidth * share) if bandwidth else 0.0
            if kind in GEMM_LIKE or kind == "dwconv":
                eff = DEFAULT_EFFICIENCY.get(f"{kind}/{precision}", DEFAULT_EFFICIENCY[kind])
                ops[f"{kind}/{precision}"] = OpCost(1.0 / (peak * eff), per_byte, per_byte, DEFAULT_OVERHEAD_S,
                                                    f"{basis}: peak x {eff:g}" + (
                                                        "" if bandwidth else ", no memory term (no bandwidth)"))
            elif bandwidth:
                ops[f"{kind}/{precision}"] = OpCost(0.0, per_byte, 0.0, DEFAULT_OVERHEAD_S,
                                                    f"{basis}: bandwidth x {share:g}")
            else:  # nothing to price data movement by: one element per peak MAC (an optimistic floor)
                ops[f"{kind}/{precision}"] = OpCost(1.0 / peak, 0.0, 0.0, DEFAULT_OVERHEAD_S,
                                                    f"{basis}: no bandwidth figure, 1 element per peak MAC")
    fp32 = peak_macs_per_s.get("fp32")
    if fp32:
        ops["portable/fp32"] = OpCost(1.0 / (fp32 * DEFAULT_PORTABLE_EFFICIENCY), 0.0, 0.0, DEFAULT_OVERHEAD_S,
                                      f"{basis}: fp32 peak x {DEFAULT_PORTABLE_EFFICIENCY:g} (portable kernels)")
    return CostModel(device, ops, calibrated=False)


# ----------------------------------------------------------------------------------------- fitting

@dataclass
class Observation:
    """One profiled model: its work items and what its profile measured (milliseconds)."""

    work: ModelWork
    events: list[tuple[str, float]]         # (operator kind, median ms per call), in execution order
    delegate_ms: float | None = None        # DELEGATE_CALL median
    wall_ms: float | None = None            # measured latency per inference (median), runtime call included
    source: str = ""


def align(work: ModelWork, events: list[tuple[str, float]]) -> tuple[list[tuple[WorkItem, float]], list[str]]:
    """Pair work items with measured events kind by kind, in order; kinds whose counts differ are skipped."""
    measured, items = defaultdict(list), defaultdict(list)
    for kind, ms in events:
        measured[kind].append(ms)
    for item in work.items:
        items[item.category].append(item)
    pairs, skipped = [], []
    for kind in sorted(set(measured) | set(items)):
        if len(measured[kind]) == len(items[kind]):
            pairs += list(zip(items[kind], measured[kind]))
        else:
            skipped.append(f"{kind}: {len(items[kind])} predicted vs {len(measured[kind])} measured")
    return pairs, skipped


def _nnls_fit(x: np.ndarray, t: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float]:
    """Weighted non-negative least squares, one Huber reweighting against stray (preempted) medians."""
    from scipy.optimize import nnls

    scale = np.maximum(x.max(axis=0), 1e-30)  # condition the columns; coefficients scale back below
    xs, sw = x / scale, np.sqrt(w)
    coef, _ = nnls(xs * sw[:, None], t * sw)
    r = np.abs(xs @ coef - t) * sw
    cut = 1.345 * max(np.median(r) / 0.6745, 1e-12)
    huber = np.where(r <= cut, 1.0, cut / np.maximum(r, 1e-30))
    coef, _ = nnls(xs * (sw * np.sqrt(huber))[:, None], t * sw * np.sqrt(huber))
    loss = float(np.sum(((xs @ coef - t) ** 2) * w))
    return coef / scale, loss


def _fit_rows(rows: list[tuple[float, float, float, float, float]], kind: str) -> tuple[OpCost, float]:
    """Fit a kind's cost line to (units, bytes, weight bytes, seconds, weight) rows."""
    data = np.array(rows, dtype=float)
    columns = [data[:, 0], data[:, 1]] + ([data[:, 2]] if kind in GEMM_LIKE + ("dwconv",) else [])
    x = np.column_stack(columns + [np.ones(len(data))])
    coef, loss = _nnls_fit(x, data[:, 3], data[:, 4])
    weight_byte = coef[2] if len(columns) == 3 else 0.0
    return OpCost(float(coef[0]), float(coef[1]), float(weight_byte), float(coef[-1]), ""), loss


def _rows_for(model: CostModel, aligned) -> dict[str, list]:
    groups = defaultdict(list)
    for _, pairs, total in aligned:
        for item, ms in pairs:
            # each model counts in proportion to its own latency, not its size
            groups[f"{item.category}/{item.precision}"].append((*model.work(item), ms * 1e-3, 1.0 / total ** 2))
    return groups


def fit(observations: list[Observation], device: str) -> CostModel:
    """Calibrate a :class:`CostModel` for ``device`` from per-operator profiles of it."""
    if not observations:
        raise EdgevitError(f"No profiles of device '{device}' to calibrate from; run `edgevit profile` on "
                           "a few models first.")
    aligned, report = [], {"skipped": {}}
    for obs in observations:
        pairs, skipped = align(obs.work, obs.events)
        if skipped:
            report["skipped"][obs.source or obs.work.model] = skipped
        aligned.append((obs, pairs, sum(ms for _, ms in pairs) * 1e-3 or 1.0))

    # The microkernel tile: the (tile_m, tile_n) under which the GEMM-like kinds fit best.
    best = None
    for tile_m in TILES_M:
        for tile_n in TILES_N:
            probe = CostModel(device, {}, tile_m=tile_m, tile_n=tile_n)
            loss = sum(_fit_rows(rows, key.split("/")[0])[1] for key, rows in _rows_for(probe, aligned).items()
                       if key.split("/")[0] in GEMM_LIKE and len(rows) >= MIN_OPS)
            if best is None or loss < best[0]:
                best = (loss, tile_m, tile_n)
    model = CostModel(device, {}, tile_m=best[1], tile_n=best[2], calibrated=True,
                      sources=[o.source for o in observations if o.source])

    groups = _rows_for(model, aligned)
    pooled = defaultdict(list)
    for key, rows in groups.items():
        if key.split("/")[0] not in OWN_FIT_ONLY:
            pooled[f"movement/{key.split('/')[1]}"] += rows
    for key, rows in {**groups, **pooled}.items():
        if len(rows) >= MIN_OPS:
            cost, _ = _fit_rows(rows, key.split("/")[0])
            cost.basis = (f"pooled fit of data movement ({len(rows)} ops)" if key.startswith("movement/")
                          else f"calibrated ({len(rows)} ops)")
            model.ops[key] = cost

    # Outside the operator events: per model precision, measured latency - sum of operator times
    # = call + operators x dispatch + unprofiled x operator time (non-negative least squares).
    per_precision = defaultdict(list)
    for obs, _, _ in aligned:
        timed = [ms * 1e-3 for _, ms in obs.events]
        total = obs.wall_ms if obs.wall_ms is not None else obs.delegate_ms
        if total is not None and timed:
            per_precision[obs.work.precision].append((len(timed), sum(timed), total * 1e-3 - sum(timed),
                                                      max(obs.work.partitions() - 1, 0)))
    for precision, pts in sorted(per_precision.items()):
        data = np.array(pts, dtype=float)
        columns = [data[:, 0], np.ones(len(data)), data[:, 1]][:min(3, len(data))]
        split = data[:, 3].any() and len(data) > 3  # extra delegate calls: a regressor once some model has them
        if split:
            columns.append(data[:, 3])
        coef, _ = _nnls_fit(np.column_stack(columns), data[:, 2], 1.0 / np.maximum(data[:, 1], 1e-6) ** 2)
        extra = float(coef[-1]) if split else None
        coef = list(coef[:3]) + [0.0] * (3 - min(len(coef), 3))
        model.dispatch_s[precision], model.call_s[precision], model.unprofiled[precision] = map(float, coef)
        if extra is not None:
            model.delegate_call_s[precision] = extra
    report.update({"profiles": len(observations), "tile_m": model.tile_m, "tile_n": model.tile_n,
                   "aligned_ops": sum(len(p) for _, p, _ in aligned)})
    model.fit_report = report
    return model
