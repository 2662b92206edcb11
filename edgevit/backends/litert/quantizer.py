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
    float .tflite on the calibration images is kept (min-max everywhere but SHViT). Percentile / MSE
    (histogram) ranges would need every activation value, which ai-edge-quantizer's calibration does not
    hand out; on ExecuTorch they were within 0.5 dB of min-max (README, "The int8 recipe").
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

__all__ = ["static_int8_recipe", "float16_weights_recipe", "dynamic_int8_recipe", "FLOAT_IN_INT8",
           "FLOAT_NORM_MODULES", "OBSERVERS", "module_scope", "tensor_scope", "merge_min_max"]

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
