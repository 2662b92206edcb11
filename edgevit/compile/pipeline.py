"""``edgevit compile``: model -> weights -> deploy form -> quantize + lower -> verify -> artifact + manifest.

One function, :func:`compile_model`, in the order the data flows. Everything a user can get wrong is
checked before the slow steps (names, weights, shapes, memory budget, calibration folder), and the output
folder is written atomically, so a failed compile leaves nothing behind.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path

import torch

from .._io import atomic_directory, atomic_write_json, atomic_write_text, ensure_writable_dir
from .._memory import release_freed_memory
from ..backends import Backend, LoweredArtifact, get_backend, list_backends
from ..data import CalibrationSet, Preprocess, find_images, load_image_folder, load_labelled_folder, synthetic_images
from ..devices import DeviceProfile, get_device
from ..errors import DoesNotFitError, EdgevitError, UnknownNameError, VerificationError
from ..manifest import MANIFEST_VERSION, sha256_bytes, validate_manifest
from ..models import PreparedModel, get_family_spec, get_model_spec, list_models, parse_input_shape, prepare_model
from ..progress import SilentProgress, StageProgress
from ..quantization import DEFAULT_OBSERVER, QuantRecipe
from ..quantization.layers import quantizable_layers
from ..quantization.pt2e import plain_compile
from .batched import run_batched
from .capture import export_static
from .memory import MemoryEstimate, estimate_memory
from .metrics import DEFAULT_THRESHOLDS, Agreement, Thresholds, compare_outputs
from .mixed import DropMetric, search_mixed_precision
from .report import render_report

__all__ = ["CompileOptions", "CompileResult", "compile_model", "choose_backend"]


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
    observer: str | None = None              # None: the family's (FamilySpec.observer), else DEFAULT_OBSERVER
    ptq_steps: list[str] | None = None       # ViT-aware steps; None: the recipe's defaults
    fp32_layers: list[str] = field(default_factory=list)
    max_drop: float | None = None            # top-1 points; turns on the mixed-precision search
    eval_dir: Path | None = None             # labelled images for --max-drop (else agreement on calibration)


@dataclass
class CompileResult:
    out_dir: Path
    artifact: Path
    manifest: dict


def model_family(model: str) -> str | None:
    """The zoo family of a model name (None for a user module ``pkg.mod:fn`` or an unknown name)."""
    return get_model_spec(model).family if model in list_models() else None


def default_observer(model: str) -> str:
    """The int8 activation observer when the user names none: the zoo family's measured choice
    (``FamilySpec.observer``: histogram for TinyViT), else the recipe's DEFAULT_OBSERVER."""
    family = model_family(model)
    return (family and get_family_spec(family).observer) or DEFAULT_OBSERVER


def choose_backend(profile: DeviceProfile, requested: str, family: str | None = None) -> str:
    if requested in (None, "auto"):
        return profile.compile.preferred_for(family)
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
    if precision == "int8" and asked == ["--observer"] and getattr(backend, "takes_observer", False):
        # LiteRT: ai-edge-quantizer calibrates, the recipe only carries the observer (no family default)
        return QuantRecipe(observer=opts.observer, num_calib=opts.num_calib)
    if precision != "int8" or not backend.takes_recipe:
        if asked:
            takers = [name for name in list_backends() if get_backend(name).takes_recipe]
            raise EdgevitError(f"{', '.join(asked)} appl{'ies' if len(asked) == 1 else 'y'} to static int8 on a "
                               f"backend that follows a quantization recipe ({', '.join(takers)}); this compile is "
                               f"{backend.name} {precision}. Add --precision int8 --backend {takers[0]}, or drop "
                               "the option.")
        return None
    if opts.max_drop is not None and opts.max_drop < 0:
        raise EdgevitError(f"--max-drop {opts.max_drop:g} is negative; give the top-1 points you accept to "
                           "lose (0 or more).")
    if opts.eval_dir is not None and opts.max_drop is None:
        raise EdgevitError("--eval only serves --max-drop (the mixed-precision budget); add --max-drop X, or "
                           "score an artifact with `edgevit eval`.")
    return QuantRecipe.from_steps(opts.ptq_steps, observer=opts.observer or default_observer(opts.model),
                                  num_calib=opts.num_calib, fp32_layers=tuple(opts.fp32_layers))


def _check_layer_names(names, exported) -> None:
    known = list(quantizable_layers(exported.graph))
    for name in names:
        if name not in known:
            raise UnknownNameError("layer", name, known)


def _drop_data(opts: CompileOptions, preprocess: Preprocess, model: PreparedModel):
    """--eval's labelled images (checked before any slow step), or None for the agreement proxy."""
    if opts.eval_dir is None:
        return None
    data = load_labelled_folder(opts.eval_dir, preprocess)
    if len(data.classes) != model.num_classes:
        raise EdgevitError(f"--eval {opts.eval_dir} has {len(data.classes)} class subfolders but "
                           f"{model.name} has {model.num_classes} classes; give one subfolder per "
                           "model class (sorted names = label order).")
    return data


def _drop_metric(data, calibration: CalibrationSet, reference, batch: int) -> DropMetric:
    if data is not None:
        return DropMetric(data.inputs, data.labels, run_batched(reference, data.inputs, batch), data.source)
    return DropMetric(calibration.inputs, None, run_batched(reference, calibration.inputs, batch),
                      f"calibration images ({calibration.source})")


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


@dataclass
class _Plan:
    """What the cheap checks decided, before any slow step."""

    profile: DeviceProfile
    backend: Backend
    precision: str
    thresholds: Thresholds
    recipe: QuantRecipe | None


def _plan(opts: CompileOptions) -> _Plan:
    """Names and settings: every check that needs no model, first."""
    profile = get_device(opts.device, opts.profile_dirs)
    if profile.kind == "fpga":
        raise EdgevitError(f"Device '{profile.name}' is an FPGA board: its compile builds an HLS accelerator project "
                           "(edgevit.compile.fpga.compile_fpga, which `edgevit compile` calls for FPGA boards), not "
                           "a CPU runtime artifact.")
    backend = get_backend(choose_backend(profile, opts.backend, model_family(opts.model)))
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
    return _Plan(profile, backend, precision, thresholds, recipe)


def _attempts(opts: CompileOptions, plan: _Plan):
    """The plan, then (``--backend auto`` only) the device's other backends that offer the precision, in the
    profile's order: auto never settles for an artifact that fails verification while another backend passes."""
    yield plan
    if opts.backend not in (None, "auto"):
        return
    for name in plan.profile.compile.backends:
        backend = get_backend(name)
        if backend.name == plan.backend.name or plan.precision not in backend.precisions:
            continue
        try:
            recipe = _recipe(opts, backend, plan.precision)
        except EdgevitError:
            continue  # recipe options this backend does not take: not a candidate
        yield replace(plan, backend=backend, recipe=recipe)


def _check_memory(model: PreparedModel, exported, plan: _Plan) -> tuple[MemoryEstimate, int]:
    """Weights + peak activations against the device's budget; too much is an error that says by how much."""
    memory = estimate_memory(model.deployed, exported, plan.precision)
    budget = int(plan.profile.compile.model_memory_mb * 2**20)
    if memory.total_bytes > budget:
        over = memory.total_bytes - budget
        raise DoesNotFitError(
            f"{model.name} at {plan.precision} needs about {memory.total_bytes / 2**20:.1f} MB "
            f"({memory.weight_bytes / 2**20:.1f} MB weights + {memory.activation_bytes / 2**20:.1f} MB peak "
            f"activations) but device '{plan.profile.name}' allows {plan.profile.compile.model_memory_mb:g} MB: "
            f"{over / 2**20:.1f} MB ({over / budget:.0%}) too much. Try a smaller variant, int8, or a "
            "smaller --input-shape.")
    return memory, budget


def _lower(opts: CompileOptions, plan: _Plan, model: PreparedModel, exported, preprocess: Preprocess,
           progress: StageProgress) -> tuple[LoweredArtifact, dict | None, CalibrationSet | None, CalibrationSet]:
    """Quantize + lower (and, under --max-drop, search the layers to keep in fp32)."""
    recipe = plan.recipe
    if recipe is not None:
        # The family's facts: its bridge module and its float rule (layers always kept float, by name).
        recipe = recipe.for_family(model.spec.family_spec if model.spec else None, exported.graph)
        _check_layer_names(recipe.fp32_layers, exported)
        drop_data = _drop_data(opts, preprocess, model) if opts.max_drop is not None else None
    calibration, verification = _data_sets(opts, preprocess, need_calibration=plan.precision == "int8")
    # Backends that size the artifact against the board (mcu: arena vs SRAM, flash) are given the profile.
    device = {"device": plan.profile} if plan.backend.takes_device else {}
    lowered = plan.backend.lower(model.deployed, model.example, plan.precision,
                                 calibration.inputs if calibration is not None else None, progress,
                                 **({"recipe": recipe} if recipe is not None else {}), **device)
    mixed = None
    if opts.max_drop is not None:
        metric = _drop_metric(drop_data, calibration, model.reference, model.example.shape[0])
        lowered, mixed = search_mixed_precision(plan.backend, model.deployed, model.example, recipe,
                                                calibration.inputs, lowered, metric, opts.max_drop, progress,
                                                threads=opts.threads)
    return lowered, mixed, calibration, verification


def _manifest(opts: CompileOptions, plan: _Plan, model: PreparedModel, lowered: LoweredArtifact, mixed,
              calibration: CalibrationSet | None, verification: CalibrationSet, agreement: Agreement,
              failures: list[str], memory: MemoryEstimate, budget: int, preprocess: Preprocess,
              started: float) -> dict:
    """Every field describes the artifact that was built (shapes and classes from the built model)."""
    profile, backend, thresholds = plan.profile, plan.backend, plan.thresholds
    return validate_manifest({
        "manifest_version": MANIFEST_VERSION,
        "model": {"name": model.name, "family": model.family,
                  "params": sum(p.numel() for p in model.reference.parameters()),
                  "num_classes": model.num_classes},
        "weights": model.weights,
        "device": {"name": profile.name, "display_name": profile.display_name, "soc": profile.soc},
        "backend": {"name": backend.name, **lowered.details},
        "precision": plan.precision,
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
        "artifact": {"file": f"model{lowered.suffix}", "size_bytes": len(lowered.data),
                     "sha256": sha256_bytes(lowered.data),
                     "sidecars": {name: {"size_bytes": len(blob)} for name, blob in lowered.sidecars.items()}},
        "inputs": [{"name": "pixel_values", "shape": list(model.input_shape), "dtype": "float32"}],
        "outputs": [{"name": "logits", "shape": list(model.output_shape) if model.output_shape else None,
                     "dtype": "float32"}],
        "preprocessing": preprocess.describe(),
        "tool_versions": _tool_versions(backend.versions()),
        "compile_seconds": round(time.perf_counter() - started, 1),
    })


def _write(out_dir: Path, lowered: LoweredArtifact, manifest: dict) -> Path:
    """The artifact, its sidecars, manifest.json and report.md, as one atomic folder."""
    artifact_name = manifest["artifact"]["file"]
    with atomic_directory(out_dir) as tmp:
        (tmp / artifact_name).write_bytes(lowered.data)
        for name, blob in lowered.sidecars.items():  # e.g. etrecord.bin, for `edgevit profile`
            (tmp / name).write_bytes(blob)
        atomic_write_json(tmp / "manifest.json", manifest)
        atomic_write_text(tmp / "report.md", render_report(manifest))
    return out_dir / artifact_name


def compile_model(opts: CompileOptions, progress: StageProgress | None = None) -> CompileResult:
    """model -> weights -> deploy form -> export + memory check -> quantize + lower -> verify -> write."""
    progress = progress or SilentProgress()
    started = time.perf_counter()
    plan = _plan(opts)                                                          # 1. cheap checks
    with progress.stage("deploy form (fold BatchNorm, reparameterize)"):        # 2. model, weights, deploy
        model = prepare_model(opts.model, parse_input_shape(opts.input_shape), opts.num_classes, opts.weights)
    with progress.stage("torch.export (static shape check)"):                   # 3. capture + memory budget
        exported = export_static(model.deployed, model.example, model.name)
    memory, budget = _check_memory(model, exported, plan)
    preprocess = Preprocess.from_dict(model.preprocessing)
    fallen_back: list[dict] = []
    for attempt in _attempts(opts, plan):                                       # 4. quantize + lower
        lowered, mixed, calibration, verification = _lower(opts, attempt, model, exported, preprocess, progress)
        if not plain_compile():
            release_freed_memory()  # the lowering's graphs are gone: the runtime's arena would stack on them
        with progress.stage(f"verifying in {attempt.backend.name} runtime", total=len(verification)) as advance:
            runner = attempt.backend.load(lowered.data, threads=opts.threads)  # 5. verify the bytes
            agreement = _verify(runner, model.reference, verification.inputs, batch=model.input_shape[0])
            advance(len(verification))
        failures = attempt.thresholds.failures(agreement)
        if not failures:
            break
        fallen_back.append({"backend": attempt.backend.name, "failures": failures, **agreement.as_dict()})
    manifest = _manifest(opts, attempt, model, lowered, mixed, calibration, verification, agreement, failures,
                         memory, budget, preprocess, started)
    if opts.backend in (None, "auto") and not failures:
        family = model_family(opts.model)
        rule = (f"preferred_by_family[{family}]" if family in plan.profile.compile.preferred_by_family
                else "preferred_backend")
        manifest["backend_choice"] = {
            "requested": "auto", "preferred": plan.backend.name, "rule": f"profile {plan.profile.name}: {rule}",
            "chosen": attempt.backend.name, "failed": fallen_back,
            "reason": (f"{plan.backend.name} {plan.precision} failed verification; --backend auto takes the next "
                       f"backend of the device that passes") if fallen_back else "the profile's preferred backend"}
    if failures:
        tried = "".join(f"; {f['backend']}: {'; '.join(f['failures'])}" for f in fallen_back[:-1])
        raise VerificationError(
            f"{model.name} for {plan.profile.name} ({attempt.backend.name} {plan.precision}) failed verification on "
            f"{agreement.samples} inputs: {'; '.join(failures)} (max abs error {agreement.max_abs_error:.4g}, "
            f"top-1 agreement {agreement.top1_agreement:.0%})"
            + (f" (tried before it{tried})" if tried else "") + ". Nothing was written. Calibrate on real "
            "images (--calib), try another precision, or relax --min-sqnr/--min-cosine.")
    out_dir = Path(opts.output_root) / f"{model.name.replace(':', '.')}-{plan.profile.name}"
    artifact = _write(out_dir, lowered, manifest)                               # 6. artifact + manifest
    return CompileResult(out_dir=out_dir, artifact=artifact, manifest=manifest)
