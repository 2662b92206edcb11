"""``edgevit compile``: model -> weights -> deploy form -> quantize + lower -> verify -> artifact + manifest.

One function, :func:`compile_model`, in the order the data flows. Everything a user can get wrong is
checked before the slow steps (names, weights, shapes, memory budget, calibration folder), and the output
folder is written atomically, so a failed compile leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import platform
import time
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path

import torch

from .._io import ensure_writable_dir, atomic_directory, atomic_write_json, atomic_write_text
from ..backends import StageProgress, get_backend
from ..data import CalibrationSet, Preprocess, load_image_folder, load_labelled_folder, synthetic_images
from ..data.images import find_images
from ..devices import DeviceProfile, get_device
from ..errors import DoesNotFitError, EdgevitError, UnknownNameError, VerificationError
from ..models import deploy
from ..models._checkpoint import load_weights
from ..models._synthetic import SYNTHETIC_WEIGHTS_NOTE
from ..models._resolve import ResolvedModel, parse_input_shape, resolve_model
from ..quantization import DEFAULT_OBSERVER, QuantRecipe
from ..quantization.layers import quantizable_layers
from .capture import export_static
from .evaluate import run_batched
from .mixed import DropMetric, search_mixed_precision
from .memory import estimate_memory
from .metrics import DEFAULT_THRESHOLDS, Thresholds, compare_outputs
from .report import render_report

__all__ = ["CompileOptions", "CompileResult", "compile_model", "choose_backend", "SilentProgress"]

MANIFEST_VERSION = 1


@dataclass
class CompileOptions:
    model: str
    device: str
    backend: str = "auto"
    precision: str | None = None            # None: the profile's default
    weights: Path | None = None
    calib: Path | None = None
    num_calib: int = 32                      # the literature's calibration size (RepQ-ViT uses 32)
    num_verify: int = 8
    input_shape: str | None = None
    num_classes: int | None = None
    output_root: Path = Path("out")
    profile_dirs: list[Path] = field(default_factory=list)
    min_sqnr: float | None = None
    min_cosine: float | None = None
    threads: int = 1                         # verification runs here, where 1 thread is the fair default
    # Static int8 recipe (backends with takes_recipe: ExecuTorch) and mixed precision.
    observer: str | None = None              # None: quantization.DEFAULT_OBSERVER
    ptq_steps: list[str] | None = None       # ViT-aware steps; None: the recipe's defaults
    fp32_layers: list[str] = field(default_factory=list)
    max_drop: float | None = None            # top-1 points; turns on the mixed-precision search
    eval_dir: Path | None = None             # labelled images for --max-drop (else agreement on calibration)


@dataclass
class CompileResult:
    out_dir: Path
    artifact: Path
    manifest: dict


class SilentProgress(StageProgress):
    """For library use and tests: stages run, nothing is drawn."""

    @contextlib.contextmanager
    def stage(self, description: str, total: int | None = None):
        yield lambda n=1: None


def choose_backend(profile: DeviceProfile, requested: str) -> str:
    if requested in (None, "auto"):
        return profile.compile.preferred_backend
    if requested not in profile.compile.backends:
        raise EdgevitError(f"Device '{profile.name}' does not run backend '{requested}'; its profile lists "
                           f"{', '.join(profile.compile.backends)}. Pick one of those or --backend auto.")
    return requested


def _data_sets(opts: CompileOptions, preprocess: Preprocess, need_calibration: bool
               ) -> tuple[CalibrationSet | None, CalibrationSet]:
    """Calibration and verification inputs; verification never reuses calibration images."""
    if opts.calib is not None:
        calibration = load_image_folder(opts.calib, preprocess, opts.num_calib) if need_calibration else None
        skip = opts.num_calib if need_calibration else 0
        available = len(find_images(opts.calib)) - skip
        if available >= opts.num_verify:
            return calibration, load_image_folder(opts.calib, preprocess, opts.num_verify, skip=skip)
        return calibration, synthetic_images(preprocess, opts.num_verify, seed=1)
    calibration = synthetic_images(preprocess, opts.num_calib, seed=0) if need_calibration else None
    return calibration, synthetic_images(preprocess, opts.num_verify, seed=1)


def _recipe(opts: CompileOptions, backend, precision: str) -> QuantRecipe | None:
    """The static int8 recipe, or None when the compile is not int8 on a backend that takes one."""
    asked = [flag for flag, value in (("--observer", opts.observer), ("--ptq-steps", opts.ptq_steps),
                                      ("--fp32-layer", opts.fp32_layers), ("--max-drop", opts.max_drop),
                                      ("--eval", opts.eval_dir)) if value not in (None, [])]
    if precision != "int8" or not backend.takes_recipe:
        if asked:
            raise EdgevitError(f"{', '.join(asked)} appl{'ies' if len(asked) == 1 else 'y'} to static int8 on a "
                               f"backend that follows a quantization recipe (executorch); this compile is "
                               f"{backend.name} {precision}. Add --precision int8 --backend executorch, or drop "
                               "the option.")
        return None
    if opts.max_drop is not None and opts.max_drop < 0:
        raise EdgevitError(f"--max-drop {opts.max_drop:g} is negative; give the top-1 points you accept to "
                           "lose (0 or more).")
    if opts.eval_dir is not None and opts.max_drop is None:
        raise EdgevitError("--eval only serves --max-drop (the mixed-precision budget); add --max-drop X, or "
                           "score an artifact with `edgevit eval`.")
    return QuantRecipe.from_steps(opts.ptq_steps, observer=opts.observer or DEFAULT_OBSERVER,
                                  num_calib=opts.num_calib, fp32_layers=tuple(opts.fp32_layers))


def _check_layer_names(names, exported) -> None:
    known = list(quantizable_layers(exported.graph))
    for name in names:
        if name not in known:
            raise UnknownNameError("layer", name, known)


def _drop_data(opts: CompileOptions, preprocess: Preprocess, resolved: ResolvedModel):
    """--eval's labelled images (checked before any slow step), or None for the agreement proxy."""
    if opts.eval_dir is None:
        return None
    data = load_labelled_folder(opts.eval_dir, preprocess)
    classes = resolved.spec.num_classes if resolved.spec else None
    if classes and len(data.classes) != (opts.num_classes or classes):
        raise EdgevitError(f"--eval {opts.eval_dir} has {len(data.classes)} class subfolders but "
                           f"{resolved.name} has {opts.num_classes or classes} classes; give one subfolder per "
                           "model class (sorted names = label order).")
    return data


def _drop_metric(data, calibration: CalibrationSet, reference, batch: int) -> DropMetric:
    if data is not None:
        return DropMetric(data.inputs, data.labels, run_batched(reference, data.inputs, batch), data.source)
    return DropMetric(calibration.inputs, None, run_batched(reference, calibration.inputs, batch),
                      f"calibration images ({calibration.source})")


def _preprocess_for(resolved: ResolvedModel) -> Preprocess:
    pre = resolved.preprocessing
    _, h, w = pre["input_size"]
    return Preprocess(h, w, tuple(pre["mean"]), tuple(pre["std"]), pre["crop_pct"], pre["interpolation"])


@torch.no_grad()
def _verify(runner, reference_model, inputs: torch.Tensor, batch: int):
    outs, refs = [], []
    for start in range(0, inputs.shape[0] - batch + 1, batch):
        x = inputs[start:start + batch]
        refs.append(reference_model(x))
        outs.append(runner(x))
    return compare_outputs(torch.cat(refs), torch.cat(outs))


def _tool_versions(backend_versions: dict) -> dict:
    return {"edgevit": version("edgevit"), "python": platform.python_version(), "torch": torch.__version__,
            **backend_versions}


def compile_model(opts: CompileOptions, progress: StageProgress | None = None) -> CompileResult:
    progress = progress or SilentProgress()
    started = time.perf_counter()

    # 1. Names and settings: cheap checks first.
    profile = get_device(opts.device, opts.profile_dirs)
    backend = get_backend(choose_backend(profile, opts.backend))
    precision = opts.precision or profile.compile.default_precision
    if precision not in backend.precisions:
        raise EdgevitError(f"Backend '{backend.name}' has no precision '{precision}'; it offers "
                           f"{', '.join(backend.precisions)}.")
    base = DEFAULT_THRESHOLDS[precision]
    thresholds = Thresholds(opts.min_sqnr if opts.min_sqnr is not None else base.min_sqnr_db,
                            opts.min_cosine if opts.min_cosine is not None else base.min_cosine)
    if opts.calib is not None:
        find_images(opts.calib)  # fail now on an unreadable or empty folder, not after export
    recipe = _recipe(opts, backend, precision)
    ensure_writable_dir(opts.output_root)

    # 2. Model, weights, deploy form.
    resolved = resolve_model(opts.model, parse_input_shape(opts.input_shape), opts.num_classes,
                             synthetic_weights=opts.weights is None)
    if resolved.spec is None:
        weights = {"source": f"as built by {opts.model}", "sha256": None}
    else:
        weights = {"source": SYNTHETIC_WEIGHTS_NOTE.format(seed=0), "sha256": None}
    if opts.weights is not None:
        sha = load_weights(resolved.module, opts.weights)
        weights = {"source": str(opts.weights), "sha256": sha}
    reference = resolved.module.eval()
    with progress.stage("deploy form (fold BatchNorm, reparameterize)"):
        deployed = deploy(reference)
    example = torch.zeros(resolved.input_shape)

    # 3. Capture once at the static shape (clear errors), then the memory budget.
    with progress.stage("torch.export (static shape check)"):
        exported = export_static(deployed, example, resolved.name)
    memory = estimate_memory(deployed, exported, precision)
    budget = int(profile.compile.model_memory_mb * 2**20)
    if memory.total_bytes > budget:
        over = memory.total_bytes - budget
        raise DoesNotFitError(
            f"{resolved.name} at {precision} needs about {memory.total_bytes / 2**20:.1f} MB "
            f"({memory.weight_bytes / 2**20:.1f} MB weights + {memory.activation_bytes / 2**20:.1f} MB peak "
            f"activations) but device '{profile.name}' allows {profile.compile.model_memory_mb:g} MB: "
            f"{over / 2**20:.1f} MB ({over / budget:.0%}) too much. Try a smaller variant, int8, or a "
            "smaller --input-shape.")

    # 4. Data, quantize + lower (+ the mixed-precision search under --max-drop).
    preprocess = _preprocess_for(resolved)
    if recipe is not None:
        recipe = replace(recipe, family=resolved.family)
        _check_layer_names(recipe.fp32_layers, exported)
        drop_data = _drop_data(opts, preprocess, resolved) if opts.max_drop is not None else None
    calibration, verification = _data_sets(opts, preprocess, need_calibration=precision == "int8")
    lowered = backend.lower(deployed, example, precision,
                            calibration.inputs if calibration is not None else None, progress,
                            **({"recipe": recipe} if recipe is not None else {}))
    mixed = None
    if opts.max_drop is not None:
        metric = _drop_metric(drop_data, calibration, reference, example.shape[0])
        lowered, mixed = search_mixed_precision(backend, deployed, example, recipe, calibration.inputs, lowered,
                                                metric, opts.max_drop, progress, threads=opts.threads)

    # 5. Verify the serialized bytes in the real runtime against the fp32 eager (training-form) model.
    with progress.stage(f"verifying in {backend.name} runtime", total=len(verification)) as advance:
        runner = backend.load(lowered.data, threads=opts.threads)
        agreement = _verify(runner, reference, verification.inputs, batch=resolved.input_shape[0])
        advance(len(verification))
    failures = thresholds.failures(agreement)

    # 6. Artifact + manifest, atomically.
    out_dir = Path(opts.output_root) / f"{resolved.name.replace(':', '.')}-{profile.name}"
    artifact_name = f"model{lowered.suffix}"
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "model": {"name": resolved.name, "family": resolved.family,
                  "params": sum(p.numel() for p in reference.parameters()),
                  "num_classes": resolved.spec.num_classes if resolved.spec else None},
        "weights": weights,
        "device": {"name": profile.name, "display_name": profile.display_name, "soc": profile.soc},
        "backend": {"name": backend.name, **lowered.details},
        "precision": precision,
        "quantization": lowered.details.get("quantization"),
        **({"mixed_precision": mixed} if mixed is not None else {}),
        "calibration": ({"source": calibration.source, "count": len(calibration),
                         "synthetic": opts.calib is None} if calibration is not None else None),
        "verification": {"source": verification.source, **agreement.as_dict(),
                         "thresholds": {"min_sqnr_db": thresholds.min_sqnr_db,
                                        "min_cosine": thresholds.min_cosine},
                         "passed": not failures, "runtime_threads": opts.threads},
        "ops": lowered.ops.as_dict(),
        "memory": {**memory.as_dict(), "budget_bytes": budget},
        "artifact": {"file": artifact_name, "size_bytes": len(lowered.data),
                     "sha256": hashlib.sha256(lowered.data).hexdigest(),
                     "sidecars": {name: {"size_bytes": len(blob)} for name, blob in lowered.sidecars.items()}},
        "inputs": [{"name": "pixel_values", "shape": list(resolved.input_shape), "dtype": "float32"}],
        "outputs": [{"name": "logits", "shape": [resolved.input_shape[0], resolved.spec.num_classes]
                     if resolved.spec else None, "dtype": "float32"}],
        "preprocessing": preprocess.describe(),
        "tool_versions": _tool_versions(backend.versions()),
        "compile_seconds": round(time.perf_counter() - started, 1),
    }
    if failures:
        raise VerificationError(
            f"{resolved.name} for {profile.name} ({backend.name} {precision}) failed verification on "
            f"{agreement.samples} inputs: {'; '.join(failures)} (max abs error {agreement.max_abs_error:.4g}, "
            f"top-1 agreement {agreement.top1_agreement:.0%}). Nothing was written. Calibrate on real "
            "images (--calib), try another precision, or relax --min-sqnr/--min-cosine.")
    with atomic_directory(out_dir) as tmp:
        (tmp / artifact_name).write_bytes(lowered.data)
        for name, blob in lowered.sidecars.items():  # e.g. etrecord.bin, for `edgevit profile`
            (tmp / name).write_bytes(blob)
        atomic_write_json(tmp / "manifest.json", manifest)
        atomic_write_text(tmp / "report.md", render_report(manifest))
    return CompileResult(out_dir=out_dir, artifact=out_dir / artifact_name, manifest=manifest)
