"""``edgevit eval``: top-1/top-5 of a compiled artifact, run in its own runtime, on a labelled folder.

The images go through the preprocessing the manifest records (what a deployer replicates), in the
artifact's static batch. When the manifest's weights can be rebuilt (a zoo model and a weights file
that still has the recorded sha256), the fp32 eager model is scored on the same images, so the
number that matters, the drop, is measured rather than remembered.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

from .._io import atomic_write_json
from ..backends import get_backend
from ..data import Preprocess, load_labelled_folder
from ..errors import EdgevitError
from ..manifest import read_artifact_folder
from ..models import load_weights, resolve_model
from ..progress import SilentProgress, StageProgress
from ..training import topk_accuracy
from .batched import run_batched

__all__ = ["evaluate_artifact"]


def _fp32_model(manifest: dict):
    """The training-form model the artifact was compiled from, or (None, why not)."""
    name, weights = manifest["model"]["name"], manifest.get("weights") or {}
    source, sha = weights.get("source"), weights.get("sha256")
    if ":" in name or not sha:
        return None, "the manifest's model is not a zoo model with a weights file"
    path = Path(source)
    if not path.is_file():
        return None, f"weights file {source} is no longer there"
    if hashlib.sha256(path.read_bytes()).hexdigest() != sha:
        return None, f"weights file {source} changed since the compile (sha256 differs)"
    shape = tuple(manifest["inputs"][0]["shape"])
    resolved = resolve_model(name, shape, manifest["model"].get("num_classes"), synthetic_weights=False)
    load_weights(resolved.module, path)
    return resolved.module.eval(), None


def evaluate_artifact(folder: Path, data: Path, limit: int | None = None, threads: int = 1,
                      progress: StageProgress | None = None) -> dict:
    """Score the artifact in ``folder`` on ``data`` (class subfolders); writes and returns
    ``folder/eval-<data folder name>.json``."""
    progress = progress or SilentProgress()
    started = time.perf_counter()
    found = read_artifact_folder(folder)  # the sha256 is checked: a changed artifact is not scored
    manifest, artifact = found.manifest, found.artifact
    preprocess = Preprocess.from_dict(manifest["preprocessing"])
    with progress.stage("reading labelled images"):
        labelled = load_labelled_folder(data, preprocess, limit)
    batch = manifest["inputs"][0]["shape"][0]
    backend = get_backend(manifest["backend"]["name"])
    run = backend.load(artifact, threads=threads)
    # A user module's manifest does not know its classes: the artifact's output width does.
    num_classes = manifest["model"].get("num_classes") or run_batched(run, labelled.inputs[:1], batch).shape[1]
    if len(labelled.classes) != num_classes:
        raise EdgevitError(f"{data} has {len(labelled.classes)} class subfolders but the model in {folder} "
                           f"has {num_classes} classes; give a folder with one subfolder per model class, "
                           "named so that their sorted order is the model's label order.")
    with progress.stage(f"running {artifact.name} ({backend.name})", total=len(labelled)) as advance:
        logits = run_batched(run, labelled.inputs, batch, advance)
    ks = (1, 5) if logits.shape[1] >= 5 else (1,)
    accuracy = topk_accuracy(logits, labelled.labels, ks)
    result = {"artifact": str(artifact), "model": manifest["model"]["name"], "precision": manifest["precision"],
              "backend": backend.name, "data": {"source": labelled.source, "images": len(labelled),
                                                "classes": len(labelled.classes), "limit": limit},
              "top1": round(accuracy["top1"], 4), "top5": round(accuracy["top5"], 4) if "top5" in accuracy else None}
    model, why_not = _fp32_model(manifest)
    if model is not None:
        with progress.stage("fp32 eager reference", total=len(labelled)) as advance:
            reference = run_batched(model, labelled.inputs, batch, advance)
        fp32_top1 = topk_accuracy(reference, labelled.labels, (1,))["top1"]
        result["fp32"] = {"top1": round(fp32_top1, 4), "drop_points": round(fp32_top1 - accuracy["top1"], 4),
                          "top1_agreement": round(float((reference.argmax(1) == logits.argmax(1)).float().mean())
                                                  * 100, 4)}
    else:
        result["fp32"] = {"skipped": why_not}
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(folder) / f"eval-{Path(data).expanduser().resolve().name}.json"
    atomic_write_json(out, result)
    result["written"] = str(out)
    return result
