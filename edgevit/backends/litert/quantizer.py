"""Which quantization each LiteRT precision uses (backend-specific rules), all through ai-edge-quantizer
on the float .tflite that litert-torch produced.

- int8 (static, weights and activations): per-channel symmetric int8 weights (min/max), per-tensor
  asymmetric int8 activations calibrated in the LiteRT interpreter. Graph inputs/outputs stay float32 (a
  QUANTIZE / DEQUANTIZE pair inside the model), so a caller feeds the same tensors as for fp32.
  Chosen over litert-torch's PT2E quantizer, measured on synthetic weights at 64x64 against fp32 eager:
  shvit_s1 30.6 dB SQNR (PT2E: 24.9 dB); efficientformerv2_s0 35.6 dB (PT2E: the model does not load:
  its int8 SOFTMAX gets an output scale other than the 1/256 TFLite's kernel requires). The PT2E route
  also makes the graph input/output int8.
  What the ExecuTorch recipe (edgevit/quantization/recipe.py) learned, applied here. Measured on the micro
  variants trained on digits (64 px, 8 epochs), 32 calibration images, ``edgevit compile --backend litert
  --precision int8``'s verification SQNR (dB, 8 held-out images) before -> after, and in brackets on 96
  held-out test images for the step alone:

  * Observer. ai-edge-quantizer merges calibration results across images with a 0.95 moving average (its
    min/max algorithm's update function), an order-dependent range that the ExecuTorch measurements already
    found worst. Each image is calibrated alone and the results combine as a real min-max (over all images):
    efficientformer_micro 20.1 -> 32.3, efficientformerv2_micro 25.1 -> 32.3, efficientvit_msra_micro
    17.5 -> 29.1, tiny_vit_micro 13.2 -> 29.8, mobilenetv4_hybrid_micro 11.9 -> 15.3 [9.9 -> 16.8].
    SHViT is the exception (its residual stream has no normalisation, rare extremes widen every range):
    min-max 9.6 [10.3], the moving average 11.4 [11.2], per-image extremes averaged 11.3 [11.2]. Both
    order-independent observers (:data:`OBSERVERS`) quantize and the one with the higher SQNR against the
    float .tflite on the calibration images is kept (min-max everywhere but SHViT).
    ``edgevit compile --observer histogram|percentile|moving-average`` uses edgevit's own observers instead
    (:data:`EDGEVIT_OBSERVERS`, the ExecuTorch recipe's, edgevit/quantization/observers.py): the float
    .tflite runs again in the LiteRT interpreter with every intermediate tensor kept, one calibration image
    at a time, each calibrated activation tensor's values go into its own observer, and the observer's
    range is handed to ai-edge-quantizer as the calibration result (:class:`ObservedRanges`,
    :func:`observed_qsvs`). Not the default, measured: EfficientNet-Lite0 (tools/bench_real_weights.py
    --litert-observers, 2 threads) agreement / cosine mean / worst / logit SQNR: min-max 18/20, 0.9965 /
    0.9921, 21.4 dB; histogram 17/20, 0.9952 / 0.9879, 20.0 dB; percentile 16/20, 0.9896 / 0.9593, 16.5 dB
    (the histogram clips 23 of 67 ranges to < 0.9 of the CIFAR calibration min-max, while the ImageNet
    photos exceed that min-max on 23 tensors). Fashion-MNIST top-1 (10,000 test images, SE 0.35) min-max /
    histogram / percentile: shvit_micro 86.23 / 86.22 / 86.17, efficientformer_micro 85.20 / 85.13 / 85.10,
    tiny_vit_micro 85.46 / 85.36 / 85.45 (percentile's verification SQNR is higher, +0.7 to +2.7 dB).
  * Float norm statistics (:data:`FLOAT_NORM_MODULES`): mean, variance, ``+ eps`` and rsqrt stay float, as
    ExecuTorch's ``float-norm``. Quantized, the ``var + eps`` constant gets a ~4e-8 scale and XNNPACK's
    int8 ADD refuses it, so each norm cut the delegated graph: mobilevit_micro 12 -> 1 partitions,
    mobilevitv2_micro 12 -> 1, tiny_vit_micro 10 -> 1, efficientformer_micro 4 -> 1, m3vit_micro 6 -> 1.
    SQNR: efficientformer_micro +1.2 dB over min-max alone, the others within 0.5 dB.
  * Family float rule (``FamilySpec.float_modules``, the same rule the ExecuTorch recipe applies):
    efficientvit_mit_micro 5.2 dB [test] with ReluLinearAttention in int8, 21.2 with it float; 8.1 -> 22.0
    verification, 4 partitions -> 1.
  * Int8 ops XNNPACK still refuses (an ADD whose input scales are too far from its output scale: fastvit's
    RepMixer residual, branch scale ~1/1400 of the trunk's on synthetic weights): read off the delegated
    model, kept float, quantized again (the manifest lists them under ``float_for_xnnpack``).
  * EfficientNet-Lite0 (real ImageNet weights, tools/bench_real_weights.py's 20 photos, 32 CIFAR photos to
    calibrate): top-1 agreement with fp32 15/20 -> 17/20, logit cosine mean 0.978 -> 0.993 (worst image
    0.939 -> 0.980), as ExecuTorch's float-norm recipe (17/20, 0.9935). Its ReLU6 outputs already calibrate
    to [0, 6]; no op type kept float reaches 19/20 (all CONV_2D float: 18/20, all DEPTHWISE_CONV_2D: 18/20,
    all ADD: 18/20), nor lifts SHViT by more than 1.2 dB (ADD), so none is added to :data:`FLOAT_IN_INT8`.
  * Bias correction of the convs a BatchNorm folds into (a user's module; the zoo's deploy forms have none)
    is adopted, computed layer after layer on edgevit's PT2E simulation and written into a float copy
    before conversion (``backend._folded_bias_correction``): Lite0 17/20, 0.9935 / 0.9797 -> 18/20,
    0.9965 / 0.9919. Not adopted: bias correction of every layer written into the float biases from
    the .tflite's own error, all layers at once: shvit_micro 9.6 -> 5.1 dB after one round (each
    layer's measured shift already holds its predecessors', so they are corrected twice).
- int8-dynamic: ai-edge-quantizer's ``dynamic_wi8_afp32`` (int8 per-channel weights, activations
  quantized on the fly by the kernels). litert-torch's PT2E dynamic mode gives the same graph and numbers.
- fp16: float16 weights (float casting), dequantized at load; compute and I/O stay float32.
"""
from __future__ import annotations

import re
import warnings

__all__ = ["static_int8_recipe", "float16_weights_recipe", "dynamic_int8_recipe", "FLOAT_IN_INT8",
           "FLOAT_NORM_MODULES", "OBSERVERS", "EDGEVIT_OBSERVERS", "module_scope", "tensor_scope",
           "merge_min_max", "ObservedRanges", "observed_qsvs", "per_tensor_qsv"]

# Ops that LiteRT's XNNPACK delegate does not take with int8 activations: quantized, they fall back to
# TFLite's builtin kernels and cut the delegated graph into pieces. Kept float, they run inside the
# delegate between QUANTIZE/DEQUANTIZE. efficientformerv2_s0 at 64x64: 49 partitions and 50 ops outside
# -> 1 partition, nothing outside, same SQNR. efficientformer_l1 at 224 (its 14 int8 AVERAGE_POOL_2D):
# 18 partitions, 7.5 ms -> 4 partitions, 4.4 ms at 1 thread.
FLOAT_IN_INT8 = ("BATCH_MATMUL", "SOFTMAX", "GELU", "RSQRT", "DIV", "AVERAGE_POOL_2D",
                 "HARD_SWISH",  # XNNPACK's delegate: fp32 only (efficientvit_mit_micro: 18 int8 ones outside)
                 "RELU")  # standalone (unfused) ones: int8 only with equal in/out qparams (EfficientViT attention)


# Module classes whose ops stay float in int8 (tensor names written by litert-torch carry the module path,
# "pkg.mod.Class_attr", and ai-edge-quantizer matches its scope regexes against an op's output tensor name):
# the LayerNorm/GroupNorm statistics written out as ``Standardize`` (mean, variance, ``+ eps``, rsqrt).
FLOAT_NORM_MODULES = ("Standardize", "RescaledStandardize")


def module_scope(classes) -> str | None:
    """A scope regex matching the ops inside any module of the given class names (None: no classes)."""
    classes = sorted(set(classes))
    return rf"\.(?:{'|'.join(re.escape(c) for c in classes)})_" if classes else None


def tensor_scope(names) -> str | None:
    """A scope regex matching exactly the ops whose (first) output tensor has one of ``names`` (the scope
    ai-edge-quantizer matches is the op's output tensor names, each followed by ``;``)."""
    names = sorted(set(names))
    return f"^(?:{'|'.join(re.escape(n) for n in names)});" if names else None


def static_int8_recipe(float_scopes=()):
    """Static int8 for every op ai-edge-quantizer supports; float for the graph I/O, :data:`FLOAT_IN_INT8`
    and every op whose output tensor name matches one of ``float_scopes`` (regexes)."""
    from ai_edge_quantizer import qtyping, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    manager = recipe_manager.RecipeManager()
    manager.add_static_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, activation_num_bits=8,
                              weight_num_bits=8)
    for op in ("INPUT", "OUTPUT", *FLOAT_IN_INT8):  # float graph I/O; float ops XNNPACK has no int8 kernel for
        manager.add_quantization_config(".*", qtyping.TFLOperationName(op), qtyping.OpQuantizationConfig(),
                                        AlgorithmName.NO_QUANTIZE)
    for scope in float_scopes:  # later configs win where scopes overlap
        if scope:
            manager.add_quantization_config(scope, qtyping.TFLOperationName.ALL_SUPPORTED,
                                            qtyping.OpQuantizationConfig(), AlgorithmName.NO_QUANTIZE)
    return manager.get_quantization_recipe()


# Activation observers over per-image calibration results (ai-edge-quantizer's own merge across images is
# an order-dependent 0.95 moving average): name -> how the per-image min/max of each tensor combine.
OBSERVERS = {
    "minmax": "min and max of each tensor over all calibration images",
    "mean-extremes": "per-image min and max of each tensor, averaged over the calibration images (clips "
                     "the rare extremes that min-max keeps)",
}


def merge_min_max(results, observer: str = "minmax") -> dict:
    """One calibration result ({tensor name: QSV}) from per-image ones, as ``observer`` combines them."""
    import numpy as np

    merged: dict = {}
    for name in dict.fromkeys(name for result in results for name in result):
        qsvs = [result[name] for result in results if result.get(name)]
        if not qsvs:
            merged[name] = next(result[name] for result in results if name in result)
            continue
        mins = np.stack([np.asarray(q["min"], dtype=np.float32) for q in qsvs])
        maxs = np.stack([np.asarray(q["max"], dtype=np.float32) for q in qsvs])
        low, high = (mins.min(0), maxs.max(0)) if observer == "minmax" else (mins.mean(0), maxs.mean(0))
        merged[name] = {**qsvs[0], "min": low, "max": high}
    return merged


# edgevit's torchao observers (edgevit/quantization/observers.py) that need every activation value: fed by
# :class:`ObservedRanges`. (Its "minmax" is :data:`OBSERVERS`' "minmax": the same range.)
EDGEVIT_OBSERVERS = ("histogram", "percentile", "moving-average")


def per_tensor_qsv(qsv) -> bool:
    """A per-tensor range (one min, one max): the QSVs an activation observer can replace."""
    import numpy as np

    return bool(qsv) and "min" in qsv and np.asarray(qsv["min"]).size == 1 and np.asarray(qsv["max"]).size == 1


class ObservedRanges:
    """Per-tensor activation ranges chosen by edgevit's ``observer``, from the float .tflite's own tensors.

    The float model runs in the LiteRT interpreter with every intermediate tensor kept (ai-edge-quantizer's
    ``create_tfl_interpreter(preserve_all_tensors=True)``, as its calibrator runs it), one image per
    :meth:`observe`; each named tensor's values go into an observer built from the ExecuTorch recipe's
    activation spec (int8 [-128, 127], per-tensor affine, its eps), and only the observers' histograms
    persist between images. :meth:`ranges` gives each tensor the [min, max] whose ai-edge-quantizer
    parameters (scale = (max - min) / 255, zero point = rint(-128 - min / scale)) are the observer's own
    scale and zero point."""

    def __init__(self, float_model: bytes, observer: str, num_calib: int, num_threads: int = 1):
        from ai_edge_quantizer.utils import tfl_interpreter_utils

        from ...quantization import QuantRecipe

        self.observer = observer
        self._spec = QuantRecipe(observer=observer, num_calib=num_calib).quantization_config().input_activation
        with warnings.catch_warnings():  # "preserve_all_tensors is for debugging": observing needs it
            warnings.simplefilter("ignore")
            self._interpreter = tfl_interpreter_utils.create_tfl_interpreter(
                float_model, use_xnnpack=True, num_threads=num_threads, preserve_all_tensors=True)
        self._key = next(iter(self._interpreter.get_signature_list()))
        self._subgraph = tfl_interpreter_utils.get_signature_main_subgraph_index(self._interpreter, self._key)
        self._input = self._interpreter.get_signature_runner(self._key).get_input_details()
        self._observers: dict = {}

    def observe(self, image, names) -> None:
        """Run one image (a float array, the model's input shape) and feed the tensors named ``names``."""
        import numpy as np
        import torch
        from ai_edge_quantizer.utils import tfl_interpreter_utils

        (input_name,) = self._input
        tfl_interpreter_utils.invoke_interpreter_signature(self._interpreter, {input_name: image}, self._key)
        names = set(names)
        for detail in self._interpreter.get_tensor_details(self._subgraph):
            if detail["name"] not in names or detail["dtype"] != np.float32:
                continue
            observer = self._observers.get(detail["name"])
            if observer is None:
                spec = self._spec
                observer = self._observers[detail["name"]] = spec.observer_or_fake_quant_ctr(
                    dtype=spec.dtype, quant_min=spec.quant_min, quant_max=spec.quant_max, qscheme=spec.qscheme)
            observer(torch.from_numpy(self._interpreter.get_tensor(detail["index"], self._subgraph).copy()))

    def ranges(self) -> dict[str, tuple[float, float]]:
        """{tensor name: (min, max)} for every observed tensor."""
        out = {}
        for name, observer in self._observers.items():
            scale, zero_point = (float(v) for v in observer.calculate_qparams())
            out[name] = ((observer.quant_min - zero_point) * scale, (observer.quant_max - zero_point) * scale)
        return out


def observed_qsvs(results, ranges: dict) -> dict:
    """One calibration result: the per-image ``results`` merged as min-max, then each per-tensor range that an
    observer chose (``ranges``, :meth:`ObservedRanges.ranges`) in place of its min-max."""
    import numpy as np

    merged = merge_min_max(results, "minmax")
    for name, (low, high) in ranges.items():
        qsv = merged.get(name)
        if per_tensor_qsv(qsv):
            merged[name] = {**qsv, "min": np.full_like(np.asarray(qsv["min"], dtype=np.float32), low),
                            "max": np.full_like(np.asarray(qsv["max"], dtype=np.float32), high)}
    return merged


def dynamic_int8_recipe():
    from ai_edge_quantizer import recipe
    return recipe.dynamic_wi8_afp32()


def float16_weights_recipe():
    from ai_edge_quantizer import qtyping, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    manager = recipe_manager.RecipeManager()
    manager.add_quantization_config(
        regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        op_config=qtyping.OpQuantizationConfig(
            weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
            compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True),
        algorithm_key=AlgorithmName.FLOAT_CASTING)
    return manager.get_quantization_recipe()
