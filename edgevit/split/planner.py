"""``edgevit split plan``: which device runs which contiguous range of a model's units, or "don't split".

The model is a list of units (``edgevit.split.graph``: runs of the exported graph between cut points where one
tensor crosses, in execution order). A plan gives each of the chosen devices one contiguous range (a stage, in
device order) and sends the boundary tensor over the link between consecutive stages:

- stage time on a device = the runtime call + the sum of its units' times (:class:`DeviceCosts`; where the
  figures come from is its ``basis``: ``estimate`` = the latency model of ``edgevit estimate``, ``profile`` = a
  stored ``edgevit profile`` of this model on the device, ``peak`` = MACs / the profile's peak MAC/s, a floor,
  ``measured`` = a per-unit table measured here, ``--unit-times``);
- transfer time = boundary bytes (at ``--boundary-dtype``) / the link's achieved bandwidth + its RTT;
- memory of a stage = its units' weights at the precision + the peak activation (a unit's input + output, counted
  at 4 bytes as ``compile`` does) <= the device's ``compile.model_memory_mb``.

Objectives: ``latency`` (one image: the sum of the stages and transfers) and ``throughput`` (a pipeline: images
per second = 1 / the slowest stage or transfer). :func:`search` is PipeEdge's dynamic programme (contiguous
ranges, devices in the given order, a device may be left out), run over every distinct device order when the
planner picks the order (EdgeShard-style, ``order="search"``); :func:`best_by_trying_every_cut` is the
exhaustive check. A single device is always a candidate: when it meets the objective at least as well as the
best split, the verdict is "don't split".
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .._io import atomic_write_json
from ..errors import DoesNotFitError, EdgevitError
from .links import LinkProfile

__all__ = ["BASES", "BOUNDARY_DTYPES", "OBJECTIVES", "PLAN_VERSION", "Candidate", "DeviceCosts", "Stage",
           "best_by_trying_every_cut", "build_plan", "device_costs", "plan_split", "read_unit_times", "search",
           "single_device", "write_plan"]

PLAN_VERSION = 1
OBJECTIVES = ("latency", "throughput")
BOUNDARY_DTYPES = {"fp32": 4, "fp16": 2, "int8": 1}
WEIGHT_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
BASES = ("estimate", "profile", "peak", "measured")
MAX_SEARCH_DEVICES = 6   # order="search" tries every distinct order: 6! = 720 DPs at most
Objective = Literal["latency", "throughput"]


# ------------------------------------------------------------------------------------------------- inputs

@dataclass
class DeviceCosts:
    """What one device costs per unit: milliseconds per unit (in unit order) + one runtime call per stage."""

    name: str
    unit_ms: list[float]
    budget_mb: float
    basis: str                          # one of BASES
    call_ms: float = 0.0
    backend: str = ""
    figures: str = ""                   # one line: where the figures come from
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._prefix = [0.0, *itertools.accumulate(self.unit_ms)]

    def stage_ms(self, first: int, last: int) -> float:
        """Units ``first..last`` (inclusive) as one stage."""
        return self.call_ms + self._prefix[last + 1] - self._prefix[first]


@dataclass(frozen=True)
class Stage:
    device: int                          # index into the devices list
    first: int                           # first unit (inclusive)
    last: int                            # last unit (inclusive)
    ms: float
    memory_mb: float


@dataclass(frozen=True)
class Candidate:
    """One assignment: its stages in pipeline order and the transfers between them."""

    stages: tuple[Stage, ...]
    transfers_ms: tuple[float, ...]
    transfer_bytes: tuple[int, ...]

    @property
    def latency_ms(self) -> float:
        return sum(s.ms for s in self.stages) + sum(self.transfers_ms)

    @property
    def bottleneck_ms(self) -> float:
        return max([s.ms for s in self.stages] + list(self.transfers_ms))

    @property
    def throughput_ips(self) -> float:
        return 1e3 / self.bottleneck_ms if self.bottleneck_ms > 0 else math.inf

    def value(self, objective: str) -> float:
        """What the objective minimises: ms per image (latency) or ms of the slowest step (throughput)."""
        return self.latency_ms if objective == "latency" else self.bottleneck_ms


def _check_choices(objective: str, boundary_dtype: str, precision: str) -> None:
    if objective not in OBJECTIVES:
        raise EdgevitError(f"Unknown objective '{objective}'; choose {' or '.join(OBJECTIVES)}.")
    if boundary_dtype not in BOUNDARY_DTYPES and boundary_dtype != "auto":
        raise EdgevitError(f"Unknown boundary dtype '{boundary_dtype}'; choose {', '.join(BOUNDARY_DTYPES)} or auto.")
    if precision not in WEIGHT_BYTES:
        raise EdgevitError(f"Unknown precision '{precision}'; choose {', '.join(WEIGHT_BYTES)}.")


# auto: a narrower boundary must buy at least this much of the objective to be worth its rounding (QuantPipe)
AUTO_BOUNDARY_GAIN = 0.05


def choose_boundary(graph, costs, link, objective: str, precision: str, order: str) -> tuple[dict, dict]:
    """``--boundary-dtype auto``: plan with fp32, fp16 and int8 boundaries over this link's bandwidth and keep the
    narrowest whose objective beats the next wider one's by AUTO_BOUNDARY_GAIN (a slow link compresses; a fast
    one keeps fp32). Returns the chosen plan and the objective per dtype."""
    plans = {d: build_plan(graph, costs, link, objective, precision, d, order) for d in BOUNDARY_DTYPES}

    def score(plan: dict) -> float:
        p = plan["predicted"]
        return p["throughput_ips"] if objective == "throughput" else -p["latency_ms"]
    chosen = "fp32"
    for narrower in ("fp16", "int8"):
        if score(plans[narrower]) > score(plans[chosen]) * (1 + AUTO_BOUNDARY_GAIN if objective == "throughput"
                                                            else 1 - AUTO_BOUNDARY_GAIN):
            chosen = narrower
    table = {d: plans[d]["predicted"] for d in BOUNDARY_DTYPES}
    plan = plans[chosen]
    plan["boundary_choice"] = {"requested": "auto", "chosen": chosen, "predicted_by_dtype": table,
                               "rule": f"the narrowest dtype that improves the {objective} by >= "
                                       f"{AUTO_BOUNDARY_GAIN:.0%} over the next wider one, at {link.name}'s "
                                       f"{link.bandwidth_mbps:g} Mbit/s"}
    return plan, table


class _Problem:
    """Units, devices and link, with the per-range figures the searches share."""

    def __init__(self, units: Sequence, input_bytes: int, costs: Sequence[DeviceCosts], link: LinkProfile,
                 objective: str, boundary_dtype: str = "fp32", precision: str = "fp32"):
        _check_choices(objective, boundary_dtype, precision)
        if not units:
            raise EdgevitError("The model has no units to place (the split graph found no cut points).")
        if not costs:
            raise EdgevitError("No devices to plan for: give at least one with --devices.")
        for c in costs:
            if len(c.unit_ms) != len(units):
                raise EdgevitError(f"Device '{c.name}' has figures for {len(c.unit_ms)} units; the model has "
                                   f"{len(units)}.")
        self.units, self.costs, self.link, self.objective = list(units), list(costs), link, objective
        self.n, self.k = len(self.units), len(self.costs)
        scale = BOUNDARY_DTYPES[boundary_dtype] / 4
        self.boundary_bytes = [int(math.ceil(u.out_bytes * scale)) for u in self.units]
        self.transfer = [link.transfer_ms(b) for b in self.boundary_bytes]
        wscale = WEIGHT_BYTES[precision] / 4
        self.weight_prefix = [0.0, *itertools.accumulate(u.param_bytes * wscale for u in self.units)]
        ins = [input_bytes, *(u.out_bytes for u in self.units[:-1])]
        self.activation = [i + u.out_bytes for i, u in zip(ins, self.units)]  # fp32, as compile counts them

    def memory_mb(self, first: int, last: int, peak_activation: float | None = None) -> float:
        act = peak_activation if peak_activation is not None else max(self.activation[first:last + 1])
        return (self.weight_prefix[last + 1] - self.weight_prefix[first] + act) / 2**20

    def stage(self, device: int, first: int, last: int) -> Stage | None:
        mem = self.memory_mb(first, last)
        if mem > self.costs[device].budget_mb:
            return None
        return Stage(device, first, last, self.costs[device].stage_ms(first, last), mem)

    def candidate(self, stages: Sequence[Stage]) -> Candidate:
        cuts = [s.last for s in stages[:-1]]
        return Candidate(tuple(stages), tuple(self.transfer[c] for c in cuts),
                         tuple(self.boundary_bytes[c] for c in cuts))

    def combine(self, a: float, b: float) -> float:
        return a + b if self.objective == "latency" else max(a, b)


# ---------------------------------------------------------------------------------------------- searches

def _dp(p: _Problem, order: Sequence[int]) -> dict[int, Candidate]:
    """PipeEdge's DP over one device order: the best candidate with exactly m stages, for every m that fits.

    f[m][d][i]: the best value of units[0:i] in m stages on devices among order[:d] (in order, a device may be
    skipped), the last stage ending at unit i-1. A stage after the first adds the transfer of the boundary
    before it. The objective (sum, or max) is monotone in every term, so the optimum is exact."""
    n, k = p.n, len(order)
    inf = math.inf
    f = [[[inf] * (n + 1) for _ in range(k + 1)] for _ in range(k + 1)]
    back: dict[tuple[int, int, int], tuple] = {}
    for d in range(k + 1):
        f[0][d][0] = 0.0
    for m in range(1, k + 1):
        for d in range(m, k + 1):
            dev = order[d - 1]
            cost = p.costs[dev]
            budget = cost.budget_mb
            row, prev_row, prev = f[m][d], f[m][d - 1], f[m - 1][d - 1]
            for i in range(m, n + 1):
                best, arg = prev_row[i], ("skip",)
                peak = 0.0
                # the stage is units h..i-1; grow it backwards so its peak activation is a running max
                for h in range(i - 1, m - 2, -1):
                    peak = max(peak, p.activation[h])
                    if p.memory_mb(h, i - 1, peak) > budget:
                        # only weights grow as h falls (activation peak never shrinks): nothing longer fits
                        break
                    before = prev[h]
                    if before == inf:
                        continue
                    value = p.combine(before, cost.stage_ms(h, i - 1))
                    if m > 1:
                        value = p.combine(value, p.transfer[h - 1])
                    if value < best:
                        best, arg = value, ("stage", h)
                row[i] = best
                if best < inf:
                    back[(m, d, i)] = arg
    found = {}
    for m in range(1, k + 1):
        if f[m][k][n] == inf:
            continue
        stages, d, i, mm = [], k, n, m
        while mm > 0:
            arg = back[(mm, d, i)]
            if arg[0] == "skip":
                d -= 1
                continue
            h = arg[1]
            stages.append(p.stage(order[d - 1], h, i - 1))
            d, i, mm = d - 1, h, mm - 1
        found[m] = p.candidate(stages[::-1])
    return found


def _orders(p: _Problem, order: str) -> list[tuple[int, ...]]:
    if order == "given":
        return [tuple(range(p.k))]
    if order != "search":
        raise EdgevitError(f"Unknown device order '{order}'; choose 'given' (the --devices order, PipeEdge) or "
                           "'search' (the planner picks the order and subset).")
    if p.k > MAX_SEARCH_DEVICES:
        raise EdgevitError(f"--order search tries every order of the devices; {p.k} devices is more than "
                           f"{MAX_SEARCH_DEVICES}. Give the order yourself (--order given).")
    seen, orders = set(), []
    for perm in itertools.permutations(range(p.k)):
        key = tuple(p.costs[i].name for i in perm)  # two devices of one profile are interchangeable
        if key not in seen:
            seen.add(key)
            orders.append(perm)
    return orders


def _better(a: Candidate | None, b: Candidate, objective: str) -> bool:
    """Is ``b`` better than ``a``: a lower objective value, then (ties) lower latency, then fewer stages."""
    if a is None:
        return True
    ka = (round(a.value(objective), 9), round(a.latency_ms, 9), len(a.stages))
    kb = (round(b.value(objective), 9), round(b.latency_ms, 9), len(b.stages))
    return kb < ka


def _search_all(p: _Problem, order: str) -> dict[int, Candidate]:
    best: dict[int, Candidate] = {}
    for o in _orders(p, order):
        for m, cand in _dp(p, o).items():
            if _better(best.get(m), cand, p.objective):
                best[m] = cand
    return best


def search(units: Sequence, input_bytes: int, costs: Sequence[DeviceCosts], link: LinkProfile, objective: str,
           boundary_dtype: str = "fp32", precision: str = "fp32", order: str = "given",
           min_stages: int = 1) -> Candidate | None:
    """The best plan with at least ``min_stages`` stages (None if none fits the devices' memory)."""
    p = _Problem(units, input_bytes, costs, link, objective, boundary_dtype, precision)
    best = None
    for m, cand in _search_all(p, order).items():
        if m >= min_stages and _better(best, cand, objective):
            best = cand
    return best


def best_by_trying_every_cut(units: Sequence, input_bytes: int, costs: Sequence[DeviceCosts], link: LinkProfile,
                             objective: str, boundary_dtype: str = "fp32", precision: str = "fp32",
                             order: str = "given", min_stages: int = 1) -> Candidate | None:
    """Exhaustive: every set of cuts x every assignment of the stages to devices (exponential; small models)."""
    p = _Problem(units, input_bytes, costs, link, objective, boundary_dtype, precision)
    if p.n > 16:
        raise EdgevitError(f"Trying every cut of {p.n} units is 2^{p.n - 1} cut sets; use search() (the DP).")
    best = None
    for m in range(max(1, min_stages), min(p.k, p.n) + 1):
        for cuts in itertools.combinations(range(1, p.n), m - 1):
            bounds = list(zip((0, *cuts), (*(c - 1 for c in cuts), p.n - 1)))
            assignments = (itertools.combinations(range(p.k), m) if order == "given"
                           else itertools.permutations(range(p.k), m))
            for devices in assignments:
                stages = [p.stage(d, a, b) for d, (a, b) in zip(devices, bounds)]
                if any(s is None for s in stages):
                    continue
                cand = p.candidate(stages)
                if _better(best, cand, objective):
                    best = cand
    return best


def single_device(units: Sequence, input_bytes: int, costs: Sequence[DeviceCosts], link: LinkProfile,
                  objective: str, precision: str = "fp32") -> tuple[Candidate | None, list[dict]]:
    """The best one-device plan, and every device's whole-model figures (fits or not)."""
    p = _Problem(units, input_bytes, costs, link, objective, "fp32", precision)
    rows, best = [], None
    for d, cost in enumerate(p.costs):
        mem = p.memory_mb(0, p.n - 1)
        ms = cost.stage_ms(0, p.n - 1)
        rows.append({"device": cost.name, "device_index": d, "predicted_ms": ms, "memory_mb": mem,
                     "budget_mb": cost.budget_mb, "fits": mem <= cost.budget_mb, "basis": cost.basis})
        stage = p.stage(d, 0, p.n - 1)
        if stage is not None:
            cand = p.candidate([stage])
            if _better(best, cand, objective):
                best = cand
    return best, rows


# ------------------------------------------------------------------------------------------ stage costs

def _owner(name: str, unit_names: list[str]) -> list[int]:
    """The units a module path's time belongs to. A group that holds units (the estimate's 'stages.1' holds
    'stages.1.blocks.0' and the downsample unit the graph names 'stages.1') goes to those units; a deeper path
    (a profile's 'stages.1.blocks.0.mlp.fc1') to the most specific unit that contains it."""
    inside = [i for i, u in enumerate(unit_names) if u.startswith(name + ".")]
    if inside:
        return [i for i, u in enumerate(unit_names) if u == name] + inside
    containing = [(len(u), i) for i, u in enumerate(unit_names) if name == u or name.startswith(u + ".")]
    return [max(containing)[1]] if containing else []


def _spread(groups: dict[str, float], units: Sequence) -> tuple[list[float], list[str]]:
    """Per-unit ms from per-module-group ms: a group inside a unit goes to it; a group that holds several units
    is shared by MACs (equally if they have none); groups no unit claims are shared in proportion at the end."""
    names = [u.name for u in units]
    ms = [0.0] * len(units)
    unclaimed = {}
    for group, t in groups.items():
        owners = _owner(group, names)
        if not owners:
            unclaimed[group] = t
            continue
        macs = [units[i].macs for i in owners]
        total = sum(macs)
        for i, mac in zip(owners, macs):
            ms[i] += t * (mac / total if total else 1 / len(owners))
    left = sum(unclaimed.values())
    notes = []
    if left:
        claimed = sum(ms)
        for i in range(len(ms)):
            ms[i] += left * (ms[i] / claimed if claimed else 1 / len(ms))
        notes.append(f"{left:.3f} ms in module groups no unit names ({', '.join(sorted(unclaimed))}) shared "
                     "among the units in proportion to their time")
    return ms, notes


def read_unit_times(path: Path, units: Sequence) -> tuple[list[float], float, str]:
    """A measured per-unit table: ``{"unit_ms": {name: ms}, "call_ms": ms, "source": "..."}`` or a flat
    ``{name: ms}``; every unit must be there."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise EdgevitError(f"Cannot read --unit-times {path}: {e.strerror or e}.") from None
    except ValueError as e:
        raise EdgevitError(f"--unit-times {path} is not JSON ({e}).") from None
    table = data.get("unit_ms", data) if isinstance(data, dict) else None
    if not isinstance(table, dict):
        raise EdgevitError(f"--unit-times {path} must be a JSON object {{\"unit_ms\": {{unit: ms}}, \"call_ms\": ms}}.")
    missing = [u.name for u in units if u.name not in table]
    if missing:
        raise EdgevitError(f"--unit-times {path} has no time for {len(missing)} unit(s): {', '.join(missing[:8])}"
                           + (" ..." if len(missing) > 8 else "") + f" (the model's units: "
                           f"{', '.join(u.name for u in units[:4])} ...).")
    try:
        ms = [float(table[u.name]) for u in units]
        call = float(data.get("call_ms", 0.0)) if "unit_ms" in data else 0.0
    except (TypeError, ValueError):
        raise EdgevitError(f"--unit-times {path}: every time must be a number of milliseconds.") from None
    if any(t < 0 or not math.isfinite(t) for t in [*ms, call]):
        raise EdgevitError(f"--unit-times {path}: times must be finite and non-negative.")
    return ms, call, str(data.get("source", path)) if isinstance(data, dict) else str(path)


def _find_stored_profile(roots: list[Path], model: str, device: str, precision: str,
                         input_shape: tuple[int, ...]) -> tuple[Path, dict] | None:
    """The newest ``edgevit profile`` JSON of ``model`` on ``device`` at this precision and shape."""
    found = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for path in root.glob("**/profiles/*.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(data, dict) or "profile_version" not in data or "ops" not in data:
                continue
            art = data.get("artifact") or {}
            if (art.get("model"), art.get("device"), art.get("precision")) != (model, device, precision):
                continue
            if art.get("input_shape") and tuple(art["input_shape"]) != tuple(input_shape):
                continue
            found.append((str(data.get("created", "")), path, data))
    if not found:
        return None
    _, path, data = max(found, key=lambda t: (t[0], str(t[1])))
    return path, data


def _from_profile(path: Path, data: dict, units: Sequence) -> tuple[list[float], float, list[str]]:
    groups: dict[str, float] = {}
    for row in data["ops"]:
        t = row.get("ms", row.get("median_ms"))
        if t is None:
            continue
        key = row.get("module") or "(no module)"
        groups[key] = groups.get(key, 0.0) + float(t)
    ms, notes = _spread(groups, units)
    wall = (data.get("wall_ms") or {}).get("median")
    call = max(wall - sum(ms), 0.0) if wall else 0.0   # what the operator events leave out: once per call
    return ms, call, notes


def _from_estimate(graph, profile, precision: str, calibration_dir: Path, num_classes: int | None,
                   work_cache: dict) -> tuple[list[float], float, str, list[str]]:
    from ..estimate import DEFAULT_CALIBRATION_DIR, cost_backend, cost_model_for, model_work

    backend, replay = cost_backend(profile, "auto")
    cost, figures, _ = cost_model_for(profile, None, calibration_dir or DEFAULT_CALIBRATION_DIR)
    if precision not in replay.precisions:
        raise EdgevitError(f"the latency model has no {precision}")
    key = (backend.name, precision)
    if key not in work_cache:
        work_cache[key] = model_work(graph.model, precision, tuple(graph.input_shape), num_classes, replay)
    prediction = cost.predict(work_cache[key])
    ms, notes = _spread(prediction.stages, graph.units)
    # dispatch is per operator: it follows the operator time; the runtime call is paid once per stage
    total = sum(ms)
    ms = [t + prediction.dispatch_ms * (t / total if total else 1 / len(ms)) for t in ms]
    notes.append("within an estimate stage (e.g. 'stages.2') its time is shared among the units by MACs")
    return ms, prediction.call_ms, f"edgevit estimate ({backend.name} lowering): {figures}", notes


def _from_peak(units: Sequence, profile, precision: str) -> tuple[list[float], str]:
    compute = profile.compute
    peak = compute.peak_gmacs_per_s.get(precision) if compute is not None else None
    if not peak:
        raise EdgevitError(f"device '{profile.name}' has no {precision} peak MAC/s in its profile")
    return ([u.macs / (peak * 1e9) * 1e3 for u in units],
            f"MACs / {peak:g} GMAC/s ({precision} peak of one core, {compute.basis}): a floor, memory traffic and "
            "non-GEMM operators are not counted")


def device_costs(graph, profile, precision: str, source: str = "auto", *, unit_times: Path | None = None,
                 stored_profiles: Sequence[Path] = (Path("out"),), calibration_dir: Path | None = None,
                 num_classes: int | None = None, work_cache: dict | None = None) -> DeviceCosts:
    """Per-unit figures for one device. ``source`` auto: the estimate, else a stored profile, else the peak
    (``--unit-times`` replaces them all for the host). Every figure keeps its basis."""
    work_cache = {} if work_cache is None else work_cache
    units = graph.units
    common = {"name": profile.name, "budget_mb": profile.compile.model_memory_mb,
              "backend": profile.compile.preferred_backend}
    if unit_times is not None and profile.name == "host":
        ms, call, where = read_unit_times(unit_times, units)
        return DeviceCosts(unit_ms=ms, call_ms=call, basis="measured", figures=f"measured here ({where})", **common)
    order = ["estimate", "profile", "peak"] if source == "auto" else [source]
    if any(s not in ("estimate", "profile", "peak") for s in order):
        raise EdgevitError(f"Unknown cost source '{source}'; choose auto, estimate, profile or peak.")
    why = []
    for basis in order:
        try:
            if basis == "estimate":
                ms, call, figures, notes = _from_estimate(graph, profile, precision, calibration_dir, num_classes,
                                                          work_cache)
            elif basis == "profile":
                found = _find_stored_profile(list(stored_profiles), graph.model, profile.name, precision,
                                             tuple(graph.input_shape))
                if found is None:
                    raise EdgevitError(f"no stored profile of {graph.model} {precision} on {profile.name} under "
                                       f"{', '.join(map(str, stored_profiles))}")
                ms, call, notes = _from_profile(*found, units)
                figures = f"stored profile {found[0]}"
            else:
                ms, figures = _from_peak(units, profile, precision)
                call, notes = 0.0, []
        except EdgevitError as e:
            why.append(f"{basis}: {str(e).rstrip('.')}")
            continue
        return DeviceCosts(unit_ms=ms, call_ms=call, basis=basis, figures=figures,
                           notes=[f"{basis} passed over: {w}" for w in why] + notes, **common)
    hint = " or measure per-unit times here (--unit-times)" if profile.name == "host" else ""
    raise EdgevitError(f"No stage cost for device '{profile.name}': " + "; ".join(why) + ". Give it compute "
                       f"figures, calibrate it (`edgevit calibrate`), or profile {graph.model} on it{hint}.")


# ----------------------------------------------------------------------------------------------- the plan

def _no_fit_message(p: _Problem) -> str:
    weights = p.weight_prefix[-1] / 2**20
    budgets = [c.budget_mb for c in p.costs]
    for i, u in enumerate(p.units):
        need = p.memory_mb(i, i)
        if need > max(budgets):
            return (f"unit {u.name} alone needs {need:.1f} MB, {need - max(budgets):.1f} MB over the largest "
                    f"budget ({max(budgets):g} MB)")
    total = sum(budgets)
    if weights > total:
        return f"the weights need {weights:.1f} MB, {weights - total:.1f} MB over all budgets together ({total:g} MB)"
    return (f"no contiguous split into at most {p.k} stages fits (weights {weights:.1f} MB; budgets "
            f"{', '.join(f'{c.name} {c.budget_mb:g} MB' for c in p.costs)})")


def _stage_rows(p: _Problem, cand: Candidate) -> list[dict]:
    rows = []
    for i, s in enumerate(cand.stages):
        c = p.costs[s.device]
        rows.append({"index": i, "device": c.name, "device_index": s.device, "backend": c.backend,
                     "first_unit": s.first, "last_unit": s.last,
                     "units": [u.name for u in p.units[s.first:s.last + 1]],
                     "predicted_ms": round(s.ms, 6), "memory_mb": round(s.memory_mb, 3),
                     "budget_mb": c.budget_mb, "basis": c.basis})
    return rows


def _transfer_rows(p: _Problem, cand: Candidate) -> list[dict]:
    return [{"from_stage": i, "to_stage": i + 1, "after_unit": s.last, "unit": p.units[s.last].name,
             "shape": list(p.units[s.last].out_shape), "bytes": cand.transfer_bytes[i],
             "predicted_ms": round(cand.transfers_ms[i], 6)}
            for i, s in enumerate(cand.stages[:-1])]


def _bottleneck(p: _Problem, cand: Candidate) -> str:
    steps = [(s.ms, f"stage {i} ({p.costs[s.device].name}, units {s.first}-{s.last})")
             for i, s in enumerate(cand.stages)]
    steps += [(t, f"transfer {i}->{i + 1} ({cand.transfer_bytes[i]} bytes over {p.link.name})")
              for i, t in enumerate(cand.transfers_ms)]
    return max(steps, key=lambda x: x[0])[1]


def _summary(p: _Problem, cand: Candidate | None) -> dict | None:
    if cand is None:
        return None
    return {"devices": [p.costs[s.device].name for s in cand.stages],
            "cuts_after": [p.units[s.last].name for s in cand.stages[:-1]],
            "last_units": [s.last for s in cand.stages],
            "latency_ms": round(cand.latency_ms, 6), "throughput_ips": round(cand.throughput_ips, 6),
            "bottleneck": _bottleneck(p, cand),
            "stage_ms": [round(s.ms, 6) for s in cand.stages],
            "transfer_ms": [round(t, 6) for t in cand.transfers_ms]}


def _verdict(p: _Problem, split: Candidate | None, single: Candidate | None) -> str:
    obj = p.objective

    def fmt(c: Candidate) -> str:
        return f"{c.latency_ms:.2f} ms per image" if obj == "latency" else f"{c.throughput_ips:.2f} images/s"
    if split is None:
        return "don't split: no split into 2 or more stages fits the devices' memory"
    if single is None or split.value(obj) < single.value(obj) - 1e-9:
        return "split"
    dev = p.costs[single.stages[0].device].name
    transfer = sum(split.transfers_ms)
    return (f"don't split: {dev} alone gives {fmt(single)}, the best split {fmt(split)} "
            f"({transfer:.2f} ms of it moving {sum(split.transfer_bytes)} bytes over {p.link.name}; "
            f"the slowest step is {_bottleneck(p, split)})")


def build_plan(graph, costs: Sequence[DeviceCosts], link: LinkProfile, objective: str, precision: str = "fp32",
               boundary_dtype: str = "fp32", order: str = "given", notes: Sequence[str] = ()) -> dict:
    """The plan document (what ``plan.json`` holds) for a split graph and per-device figures."""
    p = _Problem(graph.units, graph.input_bytes, costs, link, objective, boundary_dtype, precision)
    by_m = _search_all(p, order)
    split = None
    for m, cand in by_m.items():
        if m >= 2 and _better(split, cand, objective):
            split = cand
    single, single_rows = single_device(graph.units, graph.input_bytes, costs, link, objective, precision)
    if split is None and single is None:
        raise DoesNotFitError(f"{graph.model} does not fit these devices: {_no_fit_message(p)}. Add a device "
                              "with more memory, or raise its compile.model_memory_mb.")
    verdict = _verdict(p, split, single)
    chosen = split if verdict == "split" else single
    if chosen is None:  # a split fits, no single device does, yet the verdict is not split: cannot happen
        chosen = split
        verdict = "split"
    doc = {
        "plan_version": PLAN_VERSION,
        "model": graph.model,
        "input_shape": list(graph.input_shape),
        "input_bytes": graph.input_bytes,
        "precision": precision,
        "objective": objective,
        "boundary_dtype": boundary_dtype,
        "device_order": order,
        "devices": [{"index": i, "name": c.name, "backend": c.backend, "budget_mb": c.budget_mb,
                     "basis": c.basis, "call_ms": round(c.call_ms, 6), "figures": c.figures, "notes": c.notes}
                    for i, c in enumerate(p.costs)],
        "link": link.as_dict(),
        "units": [{"index": i, "name": u.name, "out_shape": list(u.out_shape), "out_bytes": u.out_bytes,
                   "boundary_bytes": p.boundary_bytes[i], "transfer_ms": round(p.transfer[i], 6),
                   "macs": u.macs, "param_bytes": u.param_bytes,
                   "unit_ms": {c.name: round(c.unit_ms[i], 6) for c in p.costs}}
                  for i, u in enumerate(p.units)],
        "stages": _stage_rows(p, chosen),
        "transfers": _transfer_rows(p, chosen),
        "predicted": {"latency_ms": round(chosen.latency_ms, 6), "throughput_ips": round(chosen.throughput_ips, 6),
                      "bottleneck": _bottleneck(p, chosen)},
        "single_device": {"best": _summary(p, single), "devices": single_rows},
        "best_split": _summary(p, split),
        "verdict": verdict,
        "notes": [*notes, "transfer = boundary bytes / the link's achieved bandwidth + one RTT; the input image "
                  "starts on the first stage's device and the logits stay on the last",
                  "throughput assumes a pipeline: each device and the link work on different images at once"],
    }
    canonical = json.dumps({k: doc[k] for k in ("model", "input_shape", "precision", "objective", "boundary_dtype",
                                                "device_order", "link", "stages")}, sort_keys=True)
    doc["plan_id"] = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    doc["created"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return doc


def plan_split(model: str, devices: Sequence[str], link: str, objective: str = "latency", precision: str = "int8",
               boundary_dtype: str = "fp32", order: str = "given", source: str = "auto",
               input_shape: tuple[int, ...] | None = None, num_classes: int | None = None, weights: Path | None = None,
               unit_times: Path | None = None, stored_profiles: Sequence[Path] = (Path("out"),),
               calibration_dir: Path | None = None, profile_dirs: Sequence[Path] = (), progress=None) -> dict:
    """``edgevit split plan``: names in, plan document out (checks the cheap inputs before the export)."""
    from ..devices import get_device
    from ..models import get_model_spec
    from .links import get_link

    devices = [d.strip() for d in devices if d and d.strip()]
    if not devices:
        raise EdgevitError("No devices to plan for: give one or more device profile names, e.g. --devices rpi5,pixel8.")
    _check_choices(objective, boundary_dtype, precision)
    profiles = [get_device(d, list(profile_dirs)) for d in devices]
    link_profile = get_link(link, list(profile_dirs))
    if unit_times is not None and "host" not in devices:
        raise EdgevitError("--unit-times is a table measured on this machine (device 'host'); 'host' is not "
                           f"among --devices ({', '.join(devices)}).")
    if ":" not in model:
        get_model_spec(model)  # an unknown name fails here, with the close names, before any export
    try:
        from .graph import split_units
    except ImportError:
        raise EdgevitError("The split graph (edgevit/split/graph.py, split_units) is not in this build of "
                           "edgevit; the planner needs it to find the model's cut points.") from None

    def stage(text):
        return progress.stage(text) if progress is not None else _null()
    with stage(f"exporting {model} and finding its cut points"):
        graph = split_units(model, input_shape=input_shape, num_classes=num_classes, weights=weights)
    cache: dict = {}
    costs = []
    for prof in profiles:
        with stage(f"pricing {len(graph.units)} units on {prof.name}"):
            costs.append(device_costs(graph, prof, precision, source, unit_times=unit_times,
                                      stored_profiles=stored_profiles, calibration_dir=calibration_dir,
                                      num_classes=num_classes, work_cache=cache))
    with stage(f"planning ({objective}, devices {order})"):
        if boundary_dtype == "auto":
            return choose_boundary(graph, costs, link_profile, objective, precision, order)[0]
        return build_plan(graph, costs, link_profile, objective, precision, boundary_dtype, order)


class _null:
    def __enter__(self):
        return lambda n=1: None

    def __exit__(self, *exc):
        return False


def write_plan(plan: dict, path: Path) -> Path:
    """Write ``plan.json`` atomically (a failed run never leaves half a plan)."""
    return atomic_write_json(Path(path), plan)
