"""LiteRT (TFLite): litert-torch converts at the static shape, ai-edge-quantizer quantizes the .tflite."""
from __future__ import annotations

import copy
import re
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import EdgevitError, ExportError
from .._native_log import capture_native_stderr
from .._process import parse_result_line, run_python_module
from ..base import Backend, DeviceRun, LoweredArtifact, ParsedProfile, StageProgress, register_backend
from .quantizer import (
    EDGEVIT_OBSERVERS,
    FLOAT_IN_INT8,
    FLOAT_NORM_MODULES,
    OBSERVERS,
    ObservedRanges,
    dynamic_int8_recipe,
    float16_weights_recipe,
    merge_min_max,
    module_scope,
    observed_qsvs,
    per_tensor_qsv,
    static_int8_recipe,
    tensor_scope,
)

if TYPE_CHECKING:  # torch and the LiteRT runtime load when something is converted or run, not to register
    import torch
    from torch import nn

__all__ = ["LiteRTBackend"]

_QUANTIZATION = {
    "fp16": "ai-edge-quantizer float casting: float16 weights dequantized at load, float32 compute and I/O",
    "int8-dynamic": "ai-edge-quantizer dynamic_wi8_afp32: per-channel symmetric int8 weights, activations "
                    "quantized on the fly by the kernels, float32 I/O",
}
_INT8_SCHEME = ("ai-edge-quantizer static int8: per-channel symmetric weights (min/max), per-tensor asymmetric "
                "activations calibrated in the LiteRT interpreter, float32 I/O")
_RETRIES = 3  # re-quantizations keeping float the int8 ops XNNPACK left outside (each round: those it refused)


def _failing_op(text: str) -> tuple[str | None, str | None]:
    """The op (and user source line) a litert-torch / LiteRT converter error names, if any."""
    op = re.search(r"Lowering not found: ([\w.]+)", text) or re.search(r"target=torch\.ops\.([\w.]+)", text) \
        or re.search(r"'([\w.]+)' op\b", text) or re.search(r"\b(aten\.\w+(?:\.\w+)?)", text)
    where = None
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\w+)', text.split("Original traceback:", 1)[-1])
    if "Original traceback:" in text and frames:
        path, line, func = frames[-1]
        where = f"{path}:{line} (in {func})"
    return (op.group(1) if op else None), where


def _convert(model: nn.Module, example: torch.Tensor) -> bytes:
    with capture_native_stderr():  # its MLIR libraries log to fd 2 (absl, oneDNN) on import
        import litert_torch

    try:
        with warnings.catch_warnings(), capture_native_stderr():
            warnings.simplefilter("ignore")  # torch/pytree deprecations raised inside the converter
            return litert_torch.convert(model, (example,)).model_content()
    except Exception as e:  # noqa: BLE001 - any converter failure: name the op if the message does
        text = str(e)
        op, where = _failing_op(text)
        first = next((line.strip() for line in text.splitlines() if line.strip()), type(e).__name__)
        if op:
            raise ExportError(f"LiteRT cannot convert the model: op {op}{f' at {where}' if where else ''} is not "
                              f"supported by litert-torch ({type(e).__name__}: {first}). Replace it in forward, "
                              "or use --backend executorch.") from None
        raise ExportError(f"LiteRT cannot convert the model ({type(e).__name__}: {first}). Try --backend "
                          "executorch.") from None


def _quantizer(data: bytes, recipe):
    from ai_edge_quantizer import quantizer
    return quantizer.Quantizer(data, recipe)


def _quantize(q, calibration_result=None) -> bytes:
    with capture_native_stderr(), warnings.catch_warnings():  # its progress bars, absl logs, and the
        warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging" of its own interpreter
        result = q.quantize(calibration_result, enable_progress_bar=False, enable_progress_report=False)
    return bytes(result.quantized_model)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _calibrate(q, float_model: bytes, calibration: torch.Tensor, advance, observed: ObservedRanges | None = None
               ) -> list[dict]:
    """Per-image calibration results (min/max of every tensor), each image run alone in the LiteRT interpreter
    by one ai-edge-quantizer calibrator (its statistics reset between images); the observer combines them
    (:func:`merge_min_max`). With ``observed``, each image's per-tensor activations (those the calibrator
    measured) also feed edgevit's observers, image by image (:class:`ObservedRanges`)."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import calibrator, recipe_manager

    signature = Interpreter(model_content=float_model).get_signature_list()
    key = next(iter(signature))
    input_name = signature[key]["inputs"][0]
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(q.get_quantization_recipe())
    results = []
    with capture_native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging": calibration needs it
        calib = calibrator.Calibrator(float_model, num_threads=max(1, _torch_threads()))
        for x in calibration.float().split(1):
            calib.reset_model_qsvs()  # a new dict: the previous image's stays as it was
            calib.calibrate({key: [{input_name: x.numpy()}]}, manager)
            results.append(calib.get_model_qsvs())
            if observed is not None:
                observed.observe(x.numpy(), [name for name, qsv in results[-1].items() if per_tensor_qsv(qsv)])
            advance(1)
    return results


def _sqnr_db(reference: torch.Tensor, output: torch.Tensor) -> float:
    import torch

    noise = (reference.double() - output.double()).pow(2).sum()
    return float("inf") if noise == 0 else float(10 * torch.log10(reference.double().pow(2).sum() / noise))


def _outputs(data: bytes, inputs: torch.Tensor) -> torch.Tensor:
    import torch

    from .runtime import load_model

    run = load_model(data, max(1, _torch_threads()))
    return torch.cat([run(x) for x in inputs.split(1)])


def _float_modules(model: nn.Module) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(norm-statistics classes, family-rule classes) present in ``model`` whose ops stay float in int8."""
    from ...models import get_family_spec, list_families

    present = {type(m).__name__ for m in model.modules()}
    rule = {name for family in list_families() for name in get_family_spec(family).float_modules}
    return tuple(sorted(present & set(FLOAT_NORM_MODULES))), tuple(sorted(present & rule))


def _int8_with(data: bytes, scopes: list, stats: dict) -> tuple[bytes, list[str]]:
    """Quantize with ``stats``; then keep float the int8 ops XNNPACK left outside (an ADD whose input scales
    are too far apart, a ``var + eps`` whose constant got a tiny scale) and quantize again, until none is
    (ops the delegate leaves outside the float model too are left as they are)."""
    from .runtime import outside_ops

    quantized = _quantize(_quantizer(data, static_int8_recipe(scopes)), stats)
    refused: list[str] = []
    in_fp32 = {name for _, name in outside_ops(data)}  # outside whatever the precision: nothing to gain
    for _ in range(_RETRIES):
        outside = [name for op, name in outside_ops(quantized) if op not in ("QUANTIZE", "DEQUANTIZE")
                   and name not in refused and name not in in_fp32]
        if not outside:
            break
        refused += outside
        quantized = _quantize(_quantizer(data, static_int8_recipe([*scopes, tensor_scope(refused)])), stats)
    return quantized, refused


def _folded_bias_correction(model: nn.Module, example: torch.Tensor, calibration: torch.Tensor,
                            progress: StageProgress) -> tuple[nn.Module, list[str]]:
    """The ExecuTorch recipe's default ``bias-correction-folded`` step for LiteRT: each conv a BatchNorm folds
    into is bias-corrected on edgevit's PT2E int8 simulation of the folded model (layer after layer) and the
    corrected biases are written into a float copy before conversion (``corrected_float_model``).
    EfficientNet-Lite0, tools/bench_real_weights.py: logit cosine mean / worst 0.9935 / 0.9797 -> 0.9965 /
    0.9919, top-1 agreement 17/20 -> 18/20 (the two left are fp32 near-ties, top-1 - top-2 logit 0.048 and
    0.011, inside int8's logit noise: per-logit RMS error ~0.09). A model without conv -> BatchNorm (every
    zoo deploy form) is returned as it is, nothing run."""
    from ...quantization import QuantRecipe, quantize_static
    from ...quantization.bias_correction import corrected_float_model, folded_norms
    from ..executorch.quantizer import xnnpack_int8_quantizer

    if not folded_norms(model, example):
        return model, []
    recipe = QuantRecipe(bias_correction=False)

    def simulated(folded: nn.Module) -> torch.fx.GraphModule:
        return quantize_static(folded, example, recipe, xnnpack_int8_quantizer(recipe), calibration)[0]

    with progress.stage("bias correction of convs with a folded BatchNorm (edgevit's PT2E int8 simulation)"):
        return corrected_float_model(model, example, simulated, calibration, folded_only=True)


def _equalized_streams(model: nn.Module, calibration: torch.Tensor, progress: StageProgress
                       ) -> tuple[nn.Module, list[str]]:
    """The ExecuTorch recipe's default ``equalize-stream`` step for LiteRT (``quantization/equalize.py``): a
    float copy with each residual stream's channels rescaled (exact in fp32) before conversion. A model that
    describes no residual streams is returned as it is."""
    from ...quantization import QuantRecipe
    from ...quantization.equalize import equalize_streams

    if not QuantRecipe().equalize_stream or not hasattr(model, "residual_streams"):
        return model, []
    with progress.stage("equalising residual streams (per-channel scales, exact in fp32)"):
        model = copy.deepcopy(model)
        return model, list(equalize_streams(model, calibration))


def _static_int8(data: bytes, model: nn.Module, calibration: torch.Tensor, progress: StageProgress,
                 observer: str | None = None) -> tuple[bytes, dict]:
    """The int8 .tflite and the manifest's description of it (see :mod:`.quantizer` for the choices). With no
    ``observer`` (the default), each observer in :data:`OBSERVERS` quantizes, and the one whose int8 outputs
    are closest to the float .tflite's on the calibration images (SQNR) is kept; ``observer`` (``--observer``)
    names the one to use: one of :data:`OBSERVERS` or of edgevit's :data:`EDGEVIT_OBSERVERS`."""
    from ...quantization.observers import OBSERVERS as TORCH_OBSERVERS

    norms, rule = _float_modules(model)
    scopes = [module_scope(norms + rule)]
    q = _quantizer(data, static_int8_recipe(scopes))
    observed = (ObservedRanges(data, observer, len(calibration), max(1, _torch_threads()))
                if observer in EDGEVIT_OBSERVERS else None)
    with progress.stage("calibrating (LiteRT interpreter)" + (f", {observer} observers" if observed else ""),
                        total=len(calibration)) as advance:
        per_image = _calibrate(q, data, calibration, advance, observed)
    names = [observer] if observer else list(OBSERVERS)
    candidates = {}
    with progress.stage("quantizing (ai-edge-quantizer, static int8)" + ("" if observer else ", one model per "
                        "observer"), total=len(names)) as advance:
        reference = _outputs(data, calibration)
        for name in names:
            stats = observed_qsvs(per_image, observed.ranges()) if observed else merge_min_max(per_image, name)
            quantized, refused = _int8_with(data, scopes, stats)
            sqnr = _sqnr_db(reference, _outputs(quantized, calibration))
            candidates[name] = (sqnr, quantized, refused)
            advance(1)
    chosen = max(candidates, key=lambda name: candidates[name][0])
    _, quantized, refused = candidates[chosen]
    by = ("--observer" if observer else
          "SQNR (dB) of the int8 outputs vs the float .tflite's on the calibration images")
    detail = OBSERVERS.get(chosen) or (f"edgevit's {chosen} observer (edgevit/quantization/observers.py: "
                                       f"{TORCH_OBSERVERS[chosen][1]}) fed each activation tensor of the float "
                                       ".tflite in the LiteRT interpreter, image by image")
    description = {
        "scheme": _INT8_SCHEME, "observer": chosen, "observer_detail": detail,
        "observer_choice": {"by": by, **{name: round(c[0], 2) for name, c in candidates.items()}},
        "calibration_count": len(calibration),
        "vit_aware": {"float_norm_statistics": bool(norms)},
        "float_ops": {"op_types": list(FLOAT_IN_INT8),
                      "why": "XNNPACK has no int8 kernel for them: kept float, they run in fp32 inside the delegate"},
        "float_modules": list(norms + rule),
        **({"float_by_family_rule": {"modules": list(rule)}} if rule else {}),
        "float_for_xnnpack": refused,
    }
    return quantized, description


@register_backend
class LiteRTBackend(Backend):
    name = "litert"
    suffix = ".tflite"
    precisions = ("fp32", "fp16", "int8-dynamic", "int8")
    takes_observer = True  # int8 takes --observer (edgevit.compile.pipeline._recipe), no other recipe option
    runtime_packages = ("ai-edge-litert",)
    wire_format = 2  # docs/serial-protocol.md: ArtifactFormat.TFLITE
    # No native_runner: LiteRT's benchmark_model is a different program from executor_runner; not driven yet.

    def lower(self, model: nn.Module, example: torch.Tensor, precision: str,
              calibration: torch.Tensor | None, progress: StageProgress, recipe=None) -> LoweredArtifact:
        # takes_recipe is False: ai-edge-quantizer calibrates its own way; a recipe here only names the
        # activation observer (``edgevit compile --observer``, takes_observer)
        observer = recipe.observer if recipe is not None else None
        if observer is not None and observer not in OBSERVERS and observer not in EDGEVIT_OBSERVERS:
            raise EdgevitError(f"LiteRT int8 has no observer '{observer}'; choose one of "
                               f"{', '.join(dict.fromkeys([*OBSERVERS, *EDGEVIT_OBSERVERS]))}.")
        model = model.eval()
        corrected: list[str] = []
        if precision == "int8":
            assert calibration is not None and len(calibration) > 0, "int8 needs calibration inputs"
            model, equalized = _equalized_streams(model, calibration, progress)
            model, corrected = _folded_bias_correction(model, example, calibration, progress)
        with progress.stage("converting to .tflite (litert-torch)"):
            data = _convert(model, example)
        quantization = _QUANTIZATION.get(precision)
        if precision == "int8":
            data, quantization = _static_int8(data, model, calibration, progress, observer)
            quantization["bias_corrected_layers"] = corrected
            quantization["vit_aware"]["equalize_stream"] = bool(equalized)
            quantization["equalized_streams"] = equalized
        elif precision in ("fp16", "int8-dynamic"):
            recipe = float16_weights_recipe() if precision == "fp16" else dynamic_int8_recipe()
            with progress.stage(f"quantizing (ai-edge-quantizer, {precision})"):
                data = _quantize(_quantizer(data, recipe))
        from .runtime import delegation, io_quantization

        with progress.stage("checking XNNPACK delegation"):
            ops, counts = delegation(data)
            io = io_quantization(data)
        details = {"delegate": "XNNPACK (LiteRT default CPU delegate)", **counts, "io": io,
                   "quantization": quantization}
        return LoweredArtifact(data=data, suffix=self.suffix, ops=ops, details=details)

    def load(self, artifact: bytes | Path, threads: int = 1):
        from .runtime import load_model

        return load_model(artifact, threads)

    def versions(self) -> dict[str, str]:
        return {name: version(name) for name in ("litert-torch", "ai-edge-litert", "ai-edge-quantizer")}

    def profile_here(self, artifact: Path, *, runs: int, warmup: int, threads: int,
                     timeout: float = 900.0) -> DeviceRun:
        """Whole-model times, then per-operator times from prefixes of the model (:mod:`.op_timing`)."""
        log = run_python_module(["edgevit.backends.litert.op_timing", f"--model_path={artifact}",
                                 f"--num_executions={warmup + runs}", f"--warmup={warmup}",
                                 f"--cpu_threads={threads}"], str(artifact), timeout)
        result = parse_result_line(log) or {}
        return DeviceRun(op_profile=result.get("ops"), times_ms=result.get("times_ms", []),
                         load_ms=result.get("load_ms"), peak_memory_bytes=result.get("peak_memory_bytes"),
                         log=log[-4000:])

    def parse_profile(self, run: DeviceRun, artifact: Path, warmup: int) -> ParsedProfile:
        if run.op_profile is None or not run.times_ms:
            raise EdgevitError("The device brought back no LiteRT timings for the .tflite; run the profile again.")
        rows, notes = [], []
        failed = [r for r in run.op_profile if r.get("error")]
        for r in run.op_profile:
            if r.get("median_ms") is not None:
                rows.append({"name": r["name"], "op_type": r["op_type"], "delegate": None,
                             "module": r.get("module"), "module_type": None, "ms": r["median_ms"]})
        if failed:
            notes.append(f"{len(failed)} operator(s) could not run alone and have no time: "
                         + ", ".join(f"{r['name']} ({r['error']})" for r in failed[:5]))
        extra = {"timing_source": "wall clock around Interpreter.invoke()",
                 "op_timing": "LiteRT has no op profiler in Python: median of the model cut after operator k minus "
                              "cut after k-1, same interpreter, XNNPACK and threads (PADs XNNPACK folds count on "
                              "the convolution); ms = that difference",
                 "module_mapping": "tensor names written by litert-torch", "init_ms": None, "delegate_calls": []}
        return ParsedProfile(times_ms=run.times_ms, load_ms=run.load_ms, rows=rows, extra=extra, notes=notes)
