"""``edgevit split build`` / ``run``: plan.json -> one verified artifact per stage + a split manifest -> a run.

The build folder (``OUT/MODEL-split-PLANID/``) holds ``stage-K-DEVICE.SUFFIX`` per stage and
``split_manifest.json`` (plan id, each stage's file, sha256, units, shapes, boundary dtype, backend, ops, and
the chain's verification against the whole model); it is written atomically after verification.
"""
from __future__ import annotations

import json
from pathlib import Path

from .._io import atomic_directory, atomic_write_json
from ..errors import EdgevitError
from ..manifest import sha256_bytes
from ..progress import SilentProgress, StageProgress
from .build import build_stages
from .coordinator import StageArtifact

__all__ = ["read_plan", "build_from_plan", "load_build", "SPLIT_MANIFEST", "WIRE_DTYPES"]

SPLIT_MANIFEST = "split_manifest.json"
WIRE_DTYPES = {"fp32": "float32", "fp16": "float16", "int8": "int8"}
_REQUIRED = ("plan_version", "plan_id", "model", "input_shape", "precision", "boundary_dtype", "stages", "units")


def read_plan(path: Path) -> dict:
    try:
        plan = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EdgevitError(f"Cannot read the plan {path}: {e}. Make one with `edgevit split plan`.") from None
    missing = [k for k in _REQUIRED if k not in plan] if isinstance(plan, dict) else list(_REQUIRED)
    if missing:
        raise EdgevitError(f"{path} is not a split plan: it lacks {', '.join(missing)}. Make one with "
                           "`edgevit split plan`.")
    return plan


def build_from_plan(plan_path: Path, output_root: Path = Path("out"), weights: Path | None = None,
                    calib: Path | None = None, num_calib: int = 16, num_verify: int = 4,
                    progress: StageProgress | None = None) -> tuple[Path, dict]:
    """Export once, cut where the plan says, lower each stage for its device's backend, verify the chain."""
    from .graph import split_units

    progress = progress or SilentProgress()
    plan = read_plan(plan_path)
    with progress.stage(f"exporting {plan['model']} and cutting it into {len(plan['stages'])} stage(s)"):
        graph = split_units(plan["model"], tuple(plan["input_shape"]), weights=weights)
    names = [u["name"] for u in plan["units"]]
    if names != [u.name for u in graph.units]:
        raise EdgevitError(f"{plan_path} was planned on another export of {plan['model']} (its units "
                           f"{names[:4]}... differ from this one's {[u.name for u in graph.units][:4]}...): plan "
                           "again with this edgevit and these weights.")
    last_units = [int(s["last_unit"]) for s in plan["stages"]]
    backends = [s["backend"] for s in plan["stages"]]
    built, agreement = build_stages(graph, last_units, backends, plan["precision"], calib, num_calib, num_verify,
                                    WIRE_DTYPES[plan["boundary_dtype"]], progress)
    out_dir = Path(output_root) / f"{graph.model.replace(':', '.')}-split-{plan['plan_id']}"
    stages = []
    for b, s in zip(built, plan["stages"]):
        file = f"stage-{b.artifact.index}-{s['device']}{b.suffix}"
        stages.append({"index": b.artifact.index, "device": s["device"], "backend": b.artifact.backend, "file": file,
                       "sha256": b.artifact.sha256, "size_bytes": len(b.artifact.data),
                       "first_unit": b.first_unit, "last_unit": b.last_unit,
                       "units": [graph.units[i].name for i in range(b.first_unit, b.last_unit + 1)],
                       "in_shape": list(b.in_shape), "out_shape": list(b.out_shape),
                       "out_dtype": b.artifact.out_dtype, "predicted_ms": s.get("predicted_ms"), "ops": b.ops})
    manifest = {"plan_id": plan["plan_id"], "model": graph.model, "input_shape": list(graph.input_shape),
                "precision": plan["precision"], "boundary_dtype": plan["boundary_dtype"],
                "verdict": plan.get("verdict"), "stages": stages, "verification": agreement.as_dict(),
                "weights": graph.prepared.weights, "plan": plan}
    with atomic_directory(out_dir) as tmp:
        for b, s in zip(built, stages):
            (tmp / s["file"]).write_bytes(b.artifact.data)
        atomic_write_json(tmp / SPLIT_MANIFEST, manifest)
    return out_dir, manifest


def load_build(target: Path, artifacts_root: Path = Path("out")) -> tuple[dict, list[StageArtifact]]:
    """A build folder, or a plan.json whose build is under ``artifacts_root``: the manifest and stage artifacts,
    each checked against its recorded sha256."""
    target = Path(target)
    if target.is_file():
        plan = read_plan(target)
        folder = Path(artifacts_root) / f"{plan['model'].replace(':', '.')}-split-{plan['plan_id']}"
        if not (folder / SPLIT_MANIFEST).is_file():
            raise EdgevitError(f"Plan {target} ({plan['plan_id']}) has no build in {artifacts_root}: run "
                               f"`edgevit split build {target} -o {artifacts_root}` first.")
    else:
        folder = target
    try:
        manifest = json.loads((folder / SPLIT_MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EdgevitError(f"{folder} is not a split build ({SPLIT_MANIFEST}: {e}). Run `edgevit split build`.") \
            from None
    stages = []
    for s in manifest["stages"]:
        data = (folder / s["file"]).read_bytes()
        if sha256_bytes(data) != s["sha256"]:
            raise EdgevitError(f"{folder / s['file']} does not match the sha256 in {SPLIT_MANIFEST}: the artifact "
                               "changed after it was verified. Rebuild with `edgevit split build`.")
        stages.append(StageArtifact(s["index"], s["backend"], data, s["sha256"], s["out_dtype"]))
    return manifest, stages
