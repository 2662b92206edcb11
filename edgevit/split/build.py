"""Stage artifacts: the exported graph split at the plan's cuts, each stage lowered for its device's backend,
and the chain of artifacts verified against the whole model before anything is written."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..backends import get_backend
from ..compile.metrics import DEFAULT_THRESHOLDS, Agreement, compare_outputs
from ..data import Preprocess, load_image_folder, synthetic_images
from ..errors import EdgevitError, VerificationError
from ..manifest import sha256_bytes
from ..progress import SilentProgress, StageProgress
from ..quantization import DEFAULT_OBSERVER, QuantRecipe
from .coordinator import StageArtifact
from .graph import SplitGraph, stage_modules

__all__ = ["BuiltStage", "build_stages", "FP32_CHAIN_TOLERANCE"]

FP32_CHAIN_TOLERANCE = 1e-5   # max |chain - whole| relative to max |whole| for fp32 stages


@dataclass
class BuiltStage:
    artifact: StageArtifact
    suffix: str
    first_unit: int
    last_unit: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    ops: dict


@torch.no_grad()
def build_stages(sg: SplitGraph, last_units: list[int], backends: list[str], precision: str = "fp32",
                 calib=None, num_calib: int = 16, num_verify: int = 4, boundary_dtype: str = "float32",
                 progress: StageProgress | None = None) -> tuple[list[BuiltStage], Agreement]:
    """Lower every stage and verify the chain (each artifact in its runtime) against the whole deploy form."""
    progress = progress or SilentProgress()
    if len(backends) != len(last_units):
        raise EdgevitError(f"{len(last_units)} stages but {len(backends)} backends.")
    modules = stage_modules(sg, last_units)
    preprocess = Preprocess.from_dict(sg.prepared.preprocessing)
    if calib is not None:
        calibration = load_image_folder(calib, preprocess, num_calib)
        verify = load_image_folder(calib, preprocess, num_verify, skip=num_calib, allow_fewer=True)
        verify = verify if len(verify) else synthetic_images(preprocess, num_verify, seed=1)
    else:
        calibration = synthetic_images(preprocess, num_calib, seed=0)
        verify = synthetic_images(preprocess, num_verify, seed=1)
    batch = sg.input_shape[0]
    # Each stage calibrates on what the float stages before it produce: the boundary it will really see.
    stage_inputs = calibration.inputs
    built, first = [], 0
    for k, (module, last, backend_name) in enumerate(zip(modules, last_units, backends)):
        backend = get_backend(backend_name)
        example = stage_inputs[:batch]
        recipe = None
        if precision == "int8" and backend.takes_recipe:
            recipe = QuantRecipe.from_steps(None, observer=DEFAULT_OBSERVER, num_calib=len(stage_inputs))
            family = sg.prepared.spec.family_spec if sg.prepared.spec else None
            # The family's facts: its bridge module, and its float rule (modules int8 cannot hold stay float).
            recipe = replace(recipe, bridge_module=family.bridge_module if family else None,
                             float_modules=family.float_modules if family else ())
        with progress.stage(f"stage {k}: units {first}..{last} -> {backend_name} {precision}"):
            lowered = backend.lower(module, example, precision, stage_inputs if precision == "int8" else None,
                                    progress, **({"recipe": recipe} if recipe is not None else {}))
        outputs = torch.cat([module(stage_inputs[i:i + batch]) for i in range(0, len(stage_inputs), batch)])
        out_dtype = "float32" if k == len(modules) - 1 else boundary_dtype
        built.append(BuiltStage(StageArtifact(k, backend_name, lowered.data, sha256_bytes(lowered.data), out_dtype),
                                lowered.suffix, first, last, tuple(example.shape), tuple(outputs[:batch].shape),
                                lowered.ops.as_dict()))
        stage_inputs, first = outputs, last + 1
    agreement = verify_chain(sg, built, verify.inputs, precision)
    return built, agreement


@torch.no_grad()
def verify_chain(sg: SplitGraph, built: list[BuiltStage], inputs: torch.Tensor, precision: str) -> Agreement:
    """Run the stage artifacts one after another in their runtimes; compare with the whole model."""
    from .wire import decode, encode

    runners = [get_backend(b.artifact.backend).load(b.artifact.data) for b in built]
    batch = sg.input_shape[0]
    outs, refs = [], []
    for i in range(0, inputs.shape[0] - batch + 1, batch):
        x = inputs[i:i + batch]
        refs.append(sg.prepared.deployed(x))
        y = x
        for b, run in zip(built, runners):
            y = decode(encode(run(y), b.artifact.out_dtype))   # what crosses each link, encoded as it will be
        outs.append(y)
    ref, out = torch.cat(refs), torch.cat(outs)
    agreement = compare_outputs(ref, out)
    if precision == "fp32" and all(b.artifact.out_dtype == "float32" for b in built):
        rel = float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
        if rel > FP32_CHAIN_TOLERANCE:
            raise VerificationError(f"The chain of {len(built)} fp32 stage artifacts differs from the whole model by "
                                    f"{rel:.2e} of its largest output (limit {FP32_CHAIN_TOLERANCE:g}); nothing was "
                                    "written.")
    else:
        key = precision if precision in DEFAULT_THRESHOLDS else "int8"
        failures = DEFAULT_THRESHOLDS[key].failures(agreement)
        if failures:
            raise VerificationError(f"The chain of stage artifacts fails verification against the whole model: "
                                    f"{'; '.join(failures)}; nothing was written. Try fp16 boundaries or fp32.")
    return agreement
