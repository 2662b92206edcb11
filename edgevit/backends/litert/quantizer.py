"""Which quantization each LiteRT precision uses (backend-specific rules), all through ai-edge-quantizer
on the float .tflite that litert-torch produced.

- int8 (static, weights and activations): per-channel symmetric int8 weights, per-tensor asymmetric int8
  activations calibrated in the LiteRT interpreter. Graph inputs/outputs stay float32 (a QUANTIZE /
  DEQUANTIZE pair inside the model), so a caller feeds the same tensors as for fp32.
  Chosen over litert-torch's PT2E quantizer, measured on synthetic weights at 64x64 against fp32 eager:
  shvit_s1 30.6 dB SQNR (PT2E: 24.9 dB); efficientformerv2_s0 35.6 dB (PT2E: the model does not load:
  its int8 SOFTMAX gets an output scale other than the 1/256 TFLite's kernel requires). The PT2E route
  also makes the graph input/output int8.
- int8-dynamic: ai-edge-quantizer's ``dynamic_wi8_afp32`` (int8 per-channel weights, activations
  quantized on the fly by the kernels). litert-torch's PT2E dynamic mode gives the same graph and numbers.
- fp16: float16 weights (float casting), dequantized at load; compute and I/O stay float32.
"""
from __future__ import annotations

__all__ = ["static_int8_recipe", "float16_weights_recipe", "dynamic_int8_recipe", "FLOAT_IN_INT8"]

# Ops that LiteRT's XNNPACK delegate does not take with int8 activations: quantized, they fall back to
# TFLite's builtin kernels and cut the delegated graph into pieces. Kept float, they run inside the
# delegate between QUANTIZE/DEQUANTIZE. efficientformerv2_s0 at 64x64: 49 partitions and 50 ops outside
# -> 1 partition, nothing outside, same SQNR. efficientformer_l1 at 224 (its 14 int8 AVERAGE_POOL_2D):
# 18 partitions, 7.5 ms -> 4 partitions, 4.4 ms at 1 thread.
FLOAT_IN_INT8 = ("BATCH_MATMUL", "SOFTMAX", "GELU", "RSQRT", "DIV", "AVERAGE_POOL_2D",
                 "HARD_SWISH",  # XNNPACK's delegate: fp32 only (efficientvit_mit_micro: 18 int8 ones outside)
                 "RELU")  # standalone (unfused) ones: int8 only with equal in/out qparams (EfficientViT attention)


def static_int8_recipe():
    from ai_edge_quantizer import qtyping, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    manager = recipe_manager.RecipeManager()
    manager.add_static_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, activation_num_bits=8,
                              weight_num_bits=8)
    for op in ("INPUT", "OUTPUT", *FLOAT_IN_INT8):  # float graph I/O; float ops XNNPACK has no int8 kernel for
        manager.add_quantization_config(".*", qtyping.TFLOperationName(op), qtyping.OpQuantizationConfig(),
                                        AlgorithmName.NO_QUANTIZE)
    return manager.get_quantization_recipe()


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
