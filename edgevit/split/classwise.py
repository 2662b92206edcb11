"""Class-wise split (ED-ViT): one sub-model per device, each responsible for a subset of the classes, and a
small MLP that fuses their outputs into the full prediction.

ED-ViT (arXiv 2024) gives each edge device a sub-model for a subset of the classes (pruned per subset) and
fuses the sub-models' outputs with a small MLP, retrained. Here:

- **Plan** (:func:`plan_classwise`): the classes of a labelled set are split into K = len(devices) contiguous
  subsets (in label order), sized by device speed: a device's per-image cost is the sub-model's MACs / its
  profile's peak MAC/s at the precision (the split planner's ``peak`` basis), and its share of the classes is
  proportional to 1 / cost (largest remainder, at least one class each). ``speeds=`` replaces the peaks (a
  device without one, e.g. ``host``).
- **Train** (:func:`train_classwise`): every sub-model (the model's architecture, or ``sub_model``) is trained
  on *all* training images with its subset's classes as targets plus one "other" class, so it says when an
  image is not its business; the fusion (:class:`Fusion`: softmax per sub-model, concatenated, one hidden
  layer, all classes) is trained on the training split with the sub-models frozen. The whole model is trained
  with the same budget (same images, epochs, seed) for comparison.
- **Not done**: ED-ViT's per-subset pruning. The sub-models here are unpruned (each as large as its
  architecture); :func:`evaluate_classwise` reports their params/MACs against the whole model's.
- **Build** (:func:`build_classwise`): each sub-model (deploy form) lowered for its device's backend with the
  backend's ``lower`` (as ``split build`` does), the fusion lowered for ExecuTorch (the coordinator runs it),
  the artifacts run in their runtimes and checked against the eager fused model before anything is written.
- **Run** (:func:`run_fanout`): every worker gets the same image (fan-out: one single-stage
  :func:`~edgevit.split.coordinator.run_pipeline` per sub-model, each in its own thread, so a failed worker's
  sub-model is re-loaded elsewhere or run locally as in a pipeline run); the coordinator fuses.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .._io import atomic_directory, atomic_write_json
from ..errors import EdgevitError, VerificationError
from ..manifest import sha256_bytes
from ..progress import SilentProgress, StageProgress
from .coordinator import RunReport, StageArtifact, run_pipeline

__all__ = ["CLASSWISE_VERSION", "CLASSWISE_MANIFEST", "FUSION_BACKEND", "ClasswiseModels", "FanoutReport", "Fusion",
           "build_classwise", "evaluate_classwise", "fused_logits_local", "load_classwise", "partition_classes",
           "plan_classwise", "run_fanout", "sub_targets", "train_classwise"]

CLASSWISE_VERSION = 1
CLASSWISE_MANIFEST = "classwise_manifest.json"
FUSION_BACKEND = "executorch"          # the coordinator runs the fusion MLP here
FP32_TOLERANCE = 1e-4                  # max |artifacts - eager| / max |eager| of the fused logits, fp32


# ------------------------------------------------------------------------------------------------- plan

def partition_classes(num_classes: int, speeds: Sequence[float]) -> list[list[int]]:
    """``num_classes`` labels cut into ``len(speeds)`` contiguous subsets, sizes proportional to ``speeds``
    (largest remainder; every subset gets at least one class)."""
    k = len(speeds)
    if k == 0:
        raise EdgevitError("No devices: the class-wise split needs one or more devices.")
    if num_classes < k:
        raise EdgevitError(f"{num_classes} class(es) cannot be shared among {k} devices: each device's sub-model "
                           "needs at least one class of its own. Use fewer devices or a data set with more classes.")
    if any(not (s > 0 and math.isfinite(s)) for s in speeds):
        raise EdgevitError(f"Device speeds must be positive numbers; got {list(speeds)}.")
    total = sum(speeds)
    shares = [num_classes * s / total for s in speeds]
    counts = [max(1, math.floor(x)) for x in shares]
    while sum(counts) > num_classes:     # the minimum of one pushed us over: take from the most over-served
        i = max((i for i in range(k) if counts[i] > 1), key=lambda i: counts[i] - shares[i])
        counts[i] -= 1
    while sum(counts) < num_classes:     # largest remainder first
        i = max(range(k), key=lambda i: (shares[i] - counts[i], speeds[i]))
        counts[i] += 1
    out, first = [], 0
    for c in counts:
        out.append(list(range(first, first + c)))
        first += c
    return out


def _class_counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    return torch.bincount(torch.as_tensor(labels).long(), minlength=num_classes).tolist()


def plan_classwise(model: str, devices: Sequence[str], data, precision: str = "fp32", sub_model: str | None = None,
                   speeds: Sequence[float] | None = None, profile_dirs: Sequence[Path] = ()) -> dict:
    """Which device's sub-model answers for which classes of ``data`` (anything with ``classes`` and ``labels``,
    e.g. a :class:`~edgevit.data.LabelledSet`)."""
    from ..devices import get_device
    from ..models import count_params_and_macs, get_model_spec

    devices = [d.strip() for d in devices if d and d.strip()]
    if not devices:
        raise EdgevitError("No devices: give one or more device profile names, e.g. --devices rpi5,pixel8.")
    if precision not in ("fp32", "int8"):
        raise EdgevitError(f"Class-wise sub-models are built fp32 or int8, not '{precision}'.")
    profiles = [get_device(d, list(profile_dirs)) for d in devices]   # an unknown name fails here, named
    spec = get_model_spec(model)
    sub_name = sub_model or model
    sub_spec = get_model_spec(sub_name)
    if tuple(sub_spec.input_size) != tuple(spec.input_size) and sub_spec.fixed_input_size:
        raise EdgevitError(f"--sub-model {sub_name} takes {sub_spec.input_size} inputs, {model} takes "
                           f"{spec.input_size}: both see the same image; pick a sub-model of the same size.")
    classes = list(data.classes)
    counts = _class_counts(data.labels, len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise EdgevitError(f"Class(es) {', '.join(empty[:5])} have no images in {getattr(data, 'source', 'the data')}: "
                           "every class needs training images (remove the empty class folders).")
    if len(classes) < len(devices):
        raise EdgevitError(f"The data has {len(classes)} class(es) ({', '.join(classes)}) but {len(devices)} devices "
                           f"({', '.join(devices)}) need at least one class each: use fewer devices or more classes.")
    input_size = tuple(spec.input_size)
    sub_params, sub_macs = count_params_and_macs(sub_name, input_size)
    rows = []
    for i, prof in enumerate(profiles):
        backend = prof.compile.preferred_backend
        if backend is None:
            raise EdgevitError(f"Device '{prof.name}' has no CPU runtime backend (preferred_backend is null: an FPGA "
                               "board); class-wise sub-models run in ExecuTorch or LiteRT.")
        if speeds is not None:
            if len(speeds) != len(devices):
                raise EdgevitError(f"{len(devices)} devices but {len(speeds)} speeds; give one per device.")
            speed, ms, basis = float(speeds[i]), None, "given relative speed"
        else:
            peak = prof.compute.peak_gmacs_per_s.get(precision) if prof.compute is not None else None
            if not peak:
                raise EdgevitError(f"Device '{prof.name}' has no {precision} peak MAC/s in its profile, so its speed "
                                   "is unknown: give relative speeds (--speeds, one per device) or a device that has "
                                   "one.")
            ms = sub_macs / (peak * 1e9) * 1e3
            speed, basis = 1.0 / ms, f"MACs / {peak:g} GMAC/s ({precision} peak of one core): a floor"
        rows.append({"index": i, "name": prof.name, "backend": backend, "speed": speed, "ms_per_image": ms,
                     "basis": basis})
    subsets = partition_classes(len(classes), [r["speed"] for r in rows])
    for r, subset in zip(rows, subsets):
        r["class_indices"] = subset
        r["classes"] = [classes[c] for c in subset]
        r["outputs"] = len(subset) + 1
        r["train_images_of_its_classes"] = sum(counts[c] for c in subset)
    doc = {"classwise_version": CLASSWISE_VERSION, "model": model, "sub_model": sub_name,
           "input_shape": [1, *input_size], "precision": precision, "classes": classes, "devices": rows,
           "sub_model_macs": sub_macs, "sub_model_params": sub_params,
           "partition": "classes in label order, cut into contiguous subsets sized by device speed (1 / per-image "
                        "cost; largest remainder, at least one class each)",
           "notes": ["Sub-models are not pruned (ED-ViT prunes each per class subset): each costs its architecture's "
                     "full MACs, so the class shares balance accuracy load, not compute.",
                     "Every device receives the whole image (fan-out); the link is not modelled."]}
    canonical = json.dumps({k: doc[k] for k in ("model", "sub_model", "input_shape", "precision", "classes")}
                           | {"subsets": subsets, "devices": devices}, sort_keys=True)
    doc["plan_id"] = "cw-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]
    doc["created"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return doc


# ------------------------------------------------------------------------------------------------ train

class Fusion(nn.Module):
    """The sub-models' logits, concatenated -> a softmax per sub-model -> one hidden layer -> all classes."""

    def __init__(self, sizes: Sequence[int], num_classes: int, hidden: int = 64):
        super().__init__()
        self.sizes = [int(s) for s in sizes]
        self.mlp = nn.Sequential(nn.Linear(sum(self.sizes), hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def probabilities(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([p.softmax(-1) for p in z.split(self.sizes, dim=-1)], dim=-1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.probabilities(z))


def sub_targets(labels: torch.Tensor, subset: Sequence[int], num_classes: int) -> torch.Tensor:
    """Labels for a sub-model: its classes -> 0..len(subset)-1, every other class -> len(subset) ("other")."""
    mapping = torch.full((num_classes,), len(subset), dtype=torch.long)
    mapping[torch.as_tensor(list(subset), dtype=torch.long)] = torch.arange(len(subset))
    return mapping[torch.as_tensor(labels).long()]


@dataclass
class ClasswiseModels:
    whole: nn.Module
    subs: list[nn.Module]
    fusion: Fusion
    subsets: list[list[int]]
    num_classes: int
    train_seconds: dict = field(default_factory=dict)

    @torch.no_grad()
    def sub_logits(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        from ..training import evaluate_logits

        return torch.cat([evaluate_logits(m, x, batch_size) for m in self.subs], dim=1)

    @torch.no_grad()
    def fused_logits(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        return self.fusion(self.sub_logits(x, batch_size))


def train_classwise(plan: dict, inputs: torch.Tensor, labels: torch.Tensor, epochs: int = 2, seed: int = 0,
                    fusion_steps: int = 300, fusion_hidden: int = 64, lr: float = 2e-3,
                    progress: StageProgress | None = None, whole: nn.Module | None = None) -> ClasswiseModels:
    """Train the whole model and every sub-model on the same images with the same budget, then the fusion with
    the sub-models frozen. ``whole``: a whole model already trained so (reused, e.g. across device counts)."""
    from ..models import create_model
    from ..training import train_classifier

    progress = progress or SilentProgress()
    labels = torch.as_tensor(labels).long()
    num_classes = len(plan["classes"])
    subsets = [d["class_indices"] for d in plan["devices"]]
    seconds = {}

    def fit(name: str, targets: torch.Tensor, outputs: int, what: str) -> nn.Module:
        torch.manual_seed(seed)
        model = create_model(name, num_classes=outputs)
        started = time.perf_counter()
        with progress.stage(f"training {what}: {name}, {outputs} outputs, {epochs} epoch(s) on {len(targets)} "
                            "images"):
            train_classifier(model, inputs, targets, epochs=epochs, lr=lr, seed=seed)
        seconds[what] = round(time.perf_counter() - started, 2)
        return model.eval()

    whole = whole if whole is not None else fit(plan["model"], labels, num_classes, "whole model")
    subs = [fit(plan["sub_model"], sub_targets(labels, s, num_classes), len(s) + 1, f"sub-model {k} ({d['name']})")
            for k, (s, d) in enumerate(zip(subsets, plan["devices"]))]
    fusion = Fusion([len(s) + 1 for s in subsets], num_classes, fusion_hidden)
    models = ClasswiseModels(whole, subs, fusion, subsets, num_classes, seconds)
    started = time.perf_counter()
    with progress.stage(f"training the fusion MLP ({fusion_steps} steps, sub-models frozen)"):
        z = models.sub_logits(inputs)
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        fusion.mlp.apply(lambda m: m.reset_parameters() if isinstance(m, nn.Linear) else None)
        optimizer = torch.optim.AdamW(fusion.parameters(), lr=1e-2, weight_decay=1e-4)
        fusion.train()
        batch = min(len(labels), 1024)
        for _ in range(fusion_steps):
            idx = torch.randperm(len(labels), generator=g)[:batch]
            loss = F.cross_entropy(fusion(z[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        fusion.eval()
    seconds["fusion"] = round(time.perf_counter() - started, 2)
    return models


# --------------------------------------------------------------------------------------------- evaluate

@torch.no_grad()
def _params_and_macs(module: nn.Module, input_shape: Sequence[int]) -> tuple[int, int]:
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in module.parameters())
    with FlopCounterMode(display=False) as counter:
        module(torch.zeros(*input_shape))
    return params, counter.get_total_flops() // 2


@torch.no_grad()
def evaluate_classwise(plan: dict, models: ClasswiseModels, inputs: torch.Tensor, labels: torch.Tensor) -> dict:
    """Top-1 on held-out images: the whole model vs the fused class-wise model, and each sub-model on its own
    classes (and on every image, "other" included); each sub-model's params/MACs against the whole model's."""
    from ..training import evaluate_logits, topk_accuracy

    def top1(logits, y) -> float:
        return round(topk_accuracy(logits, y, ks=(1,))["top1"], 2) if len(y) else float("nan")

    labels = torch.as_tensor(labels).long()
    whole = evaluate_logits(models.whole, inputs, 256)
    z = models.sub_logits(inputs)
    fused = models.fusion(z)
    shape = plan["input_shape"]
    whole_params, whole_macs = _params_and_macs(models.whole, shape)
    subs, first = [], 0
    for k, (sub, subset, dev) in enumerate(zip(models.subs, models.subsets, plan["devices"])):
        logits = z[:, first:first + len(subset) + 1]
        first += len(subset) + 1
        targets = sub_targets(labels, subset, models.num_classes)
        mine = targets < len(subset)
        params, macs = _params_and_macs(sub, shape)
        subs.append({"index": k, "device": dev["name"], "classes": dev["classes"],
                     "subset_top1": top1(logits[mine], targets[mine]),
                     "all_images_top1": top1(logits, targets),
                     "other_recall": round(float((logits[~mine].argmax(1) == len(subset)).float().mean() * 100), 2)
                     if (~mine).any() else None,
                     "params": params, "macs": macs, "params_vs_whole": round(params / whole_params, 3),
                     "macs_vs_whole": round(macs / whole_macs, 3)})
    return {"test_images": len(labels), "chance_top1": round(100 / models.num_classes, 2),
            "whole_top1": top1(whole, labels), "fused_top1": top1(fused, labels),
            "whole_params": whole_params, "whole_macs": whole_macs,
            "sub_params_total": sum(s["params"] for s in subs), "sub_macs_total": sum(s["macs"] for s in subs),
            "sub_models": subs, "train_seconds": models.train_seconds,
            "pruned": False}


# ------------------------------------------------------------------------------------------------ build

def _lower(module: nn.Module, backend_name: str, example: torch.Tensor, precision: str,
           calibration: torch.Tensor | None, family, progress: StageProgress):
    from ..backends import get_backend
    from ..quantization import DEFAULT_OBSERVER, QuantRecipe

    backend = get_backend(backend_name)
    kwargs = {}
    if precision == "int8" and backend.takes_recipe:
        recipe = QuantRecipe.from_steps(None, observer=DEFAULT_OBSERVER, num_calib=len(calibration))
        # The family's facts (FamilySpec or None): its bridge module and its float rule.
        kwargs["recipe"] = replace(recipe, bridge_module=family.bridge_module if family else None,
                                   float_modules=family.float_modules if family else ())
    return backend.lower(module, example, precision, calibration if precision == "int8" else None, progress,
                         **kwargs)


@torch.no_grad()
def fused_logits_local(subs: Sequence[StageArtifact], fusion: StageArtifact, inputs: torch.Tensor,
                       threads: int = 1) -> torch.Tensor:
    """The artifacts run in their runtimes here, one image at a time: what a fan-out run must reproduce."""
    from ..backends import get_backend

    runners = [get_backend(s.backend).load(s.data, threads=threads) for s in subs]
    fuse = get_backend(fusion.backend).load(fusion.data, threads=threads)
    out = []
    for i in range(len(inputs)):
        x = inputs[i:i + 1]
        out.append(fuse(torch.cat([run(x) for run in runners], dim=1)))
    return torch.cat(out)


@torch.no_grad()
def build_classwise(plan: dict, models: ClasswiseModels, output_root: Path, calibration: torch.Tensor,
                    verify: torch.Tensor, evaluation: dict | None = None,
                    progress: StageProgress | None = None) -> tuple[Path, dict]:
    """Lower each sub-model for its device's backend and the fusion for the coordinator, check the artifacts'
    fused logits against the eager fused model, then write ``OUT/MODEL-classwise-PLANID/`` atomically."""
    from ..compile.metrics import DEFAULT_THRESHOLDS, compare_outputs
    from ..models import deploy, get_model_spec

    progress = progress or SilentProgress()
    precision = plan["precision"]
    family = get_model_spec(plan["sub_model"]).family_spec
    # Contiguous (NCHW) on purpose: ExecuTorch keeps the example's dim order, and a channels-last example (a
    # permuted HWC batch) makes a program that misreads the NCHW tensors the runtime is given.
    example, calibration = verify[:1].contiguous(), calibration.contiguous()
    subs, rows = [], []
    for k, (sub, dev) in enumerate(zip(models.subs, plan["devices"])):
        with progress.stage(f"sub-model {k} -> {dev['name']} ({dev['backend']} {precision})"):
            lowered = _lower(deploy(sub), dev["backend"], example, precision, calibration, family, progress)
        subs.append(StageArtifact(0, dev["backend"], lowered.data, sha256_bytes(lowered.data), "float32"))
        rows.append({"index": k, "device": dev["name"], "backend": dev["backend"], "classes": dev["classes"],
                     "class_indices": dev["class_indices"], "outputs": dev["outputs"],
                     "file": f"sub-{k}-{dev['name']}{lowered.suffix}", "sha256": subs[-1].sha256,
                     "size_bytes": len(lowered.data), "ops": lowered.ops.as_dict()})
    with progress.stage(f"fusion MLP -> {FUSION_BACKEND} fp32 (the coordinator)"):
        width = sum(models.fusion.sizes)
        lowered = _lower(models.fusion.eval(), FUSION_BACKEND, torch.zeros(1, width), "fp32", None, None, progress)
    fusion = StageArtifact(0, FUSION_BACKEND, lowered.data, sha256_bytes(lowered.data), "float32")
    with progress.stage(f"verifying the artifacts' fused output on {len(verify)} images"):
        ref = models.fused_logits(verify)
        out = fused_logits_local(subs, fusion, verify)
        agreement = compare_outputs(ref, out)
    if precision == "fp32":
        rel = float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
        if rel > FP32_TOLERANCE:
            raise VerificationError(f"The fp32 sub-model + fusion artifacts differ from the eager fused model by "
                                    f"{rel:.2e} of its largest output (limit {FP32_TOLERANCE:g}); nothing was written.")
    else:
        failures = DEFAULT_THRESHOLDS["int8"].failures(agreement)
        if failures:
            raise VerificationError(f"The int8 sub-model artifacts' fused output fails verification against the eager "
                                    f"fused model: {'; '.join(failures)}; nothing was written. Try fp32.")
    build_id = hashlib.sha256("".join(s.sha256 for s in [*subs, fusion]).encode()).hexdigest()[:8]
    manifest = {"classwise_version": CLASSWISE_VERSION, "plan_id": plan["plan_id"], "build_id": build_id,
                "model": plan["model"], "sub_model": plan["sub_model"], "input_shape": plan["input_shape"],
                "precision": precision, "classes": plan["classes"], "sub_models": rows,
                "fusion": {"file": f"fusion{lowered.suffix}", "backend": FUSION_BACKEND, "sha256": fusion.sha256,
                           "size_bytes": len(lowered.data), "in_width": width, "sizes": models.fusion.sizes,
                           "hidden": models.fusion.mlp[0].out_features},
                "verification": agreement.as_dict(), "evaluation": evaluation, "plan": plan}
    out_dir = Path(output_root) / f"{plan['model']}-classwise-{plan['plan_id']}"
    with atomic_directory(out_dir) as tmp:
        for row, s in zip(rows, subs):
            (tmp / row["file"]).write_bytes(s.data)
        (tmp / manifest["fusion"]["file"]).write_bytes(fusion.data)
        atomic_write_json(tmp / CLASSWISE_MANIFEST, manifest)
    return out_dir, manifest


def load_classwise(folder: Path) -> tuple[dict, list[StageArtifact], StageArtifact]:
    """A class-wise build folder: its manifest, sub-model artifacts and fusion artifact, each sha256-checked."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / CLASSWISE_MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EdgevitError(f"{folder} is not a class-wise build ({CLASSWISE_MANIFEST}: {e}). Run "
                           "`edgevit split classwise`.") from None

    def read(entry: dict, backend: str) -> StageArtifact:
        data = (folder / entry["file"]).read_bytes()
        if sha256_bytes(data) != entry["sha256"]:
            raise EdgevitError(f"{folder / entry['file']} does not match the sha256 in {CLASSWISE_MANIFEST}: it "
                               "changed after it was verified. Rebuild with `edgevit split classwise`.")
        return StageArtifact(0, backend, data, entry["sha256"], "float32")

    subs = [read(s, s["backend"]) for s in manifest["sub_models"]]
    return manifest, subs, read(manifest["fusion"], manifest["fusion"]["backend"])


# -------------------------------------------------------------------------------------------------- run

@dataclass
class FanoutReport:
    logits: torch.Tensor                       # (N, classes), fused by the coordinator
    sub_reports: list[RunReport]
    seconds: float = 0.0
    plan_id: str = ""

    @property
    def top1(self) -> list[int]:
        return self.logits.argmax(1).tolist()

    def as_dict(self) -> dict:
        return {"plan_id": self.plan_id, "images": len(self.logits), "seconds": round(self.seconds, 4),
                "images_per_s": round(len(self.logits) / self.seconds, 3) if self.seconds else 0.0,
                "top1": self.top1,
                "sub_models": [{"index": k, "workers": sorted({h[0] for h in r.handled_by}),
                                "compute_ms": r.as_dict()["stage_compute_ms"].get(0), "failures": r.failures}
                               for k, r in enumerate(self.sub_reports)]}


def run_fanout(plan_id: str, subs: Sequence[StageArtifact], fusion: StageArtifact, workers: Sequence[str],
               inputs: torch.Tensor, assignment: Sequence[int] | None = None, window: int = 2,
               stall_timeout: float = 10.0, link_delay_s: float = 0.0, threads: int = 1,
               on_event: Callable[[str, dict], None] | None = None) -> FanoutReport:
    """Every image to every sub-model's worker (sub-model k on ``workers[assignment[k]]``, default k modulo the
    workers), each a single-stage pipeline run in its own thread (its own stream, failover and local fallback);
    the coordinator concatenates the sub-models' logits per image and runs the fusion artifact."""
    from ..backends import get_backend
    from .coordinator import SplitRunError

    if not workers:
        raise SplitRunError("No workers: give one host:port per device (`edgevit worker` on each).")
    assignment = list(assignment) if assignment is not None else [k % len(workers) for k in range(len(subs))]
    if len(assignment) != len(subs) or any(not 0 <= a < len(workers) for a in assignment):
        raise SplitRunError(f"{len(subs)} sub-models need an assignment to the {len(workers)} workers; got "
                            f"{assignment}.")
    notify = on_event or (lambda kind, info: None)
    reports: list[RunReport | None] = [None] * len(subs)
    errors: list[BaseException | None] = [None] * len(subs)

    def one(k: int) -> None:
        try:
            reports[k] = run_pipeline(f"{plan_id}-sub{k}", [replace(subs[k], index=0)], [workers[assignment[k]]],
                                      inputs, window=window, stall_timeout=stall_timeout, link_delay_s=link_delay_s,
                                      threads=threads, on_event=lambda kind, info: notify(kind, {**info, "sub": k}))
        except BaseException as e:  # re-raised in the caller's thread below
            errors[k] = e

    started = time.perf_counter()
    pool = [threading.Thread(target=one, args=(k,), name=f"classwise-sub{k}") for k in range(len(subs))]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    for e in errors:
        if e is not None:
            raise e
    fuse = get_backend(fusion.backend).load(fusion.data, threads=threads)
    with torch.no_grad():
        logits = torch.cat([fuse(torch.cat([r.outputs[i] for r in reports], dim=1)) for i in range(len(inputs))])
    return FanoutReport(logits, list(reports), time.perf_counter() - started, plan_id)
