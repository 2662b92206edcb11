"""Which quantization each LiteRT precision uses (backend-specific rules).

- int8 (static, weights and activations): litert-torch's PT2E quantizer, per-channel symmetric weights,
  calibrated through edgevit's shared PT2E flow on the same images as the ExecuTorch path.
- int8-dynamic: ai-edge-quantizer's ``dynamic_wi8_afp32`` recipe (int8 weights, activations quantized
  on the fly by the kernels).
- fp16: ai-edge-quantizer's float-casting of weights to float16 (compute and I/O stay float32).
"""
from __future__ import annotations

__all__ = ["static_int8_quantizer", "float16_weights_recipe", "dynamic_int8_recipe"]


def static_int8_quantizer():
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    return PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))


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
