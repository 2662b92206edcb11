"""Blocks shared by several model families."""
from .attention_bias import AttentionBiasMixin, attention_bias_index
from .drop import DropPath
from .fusion import fuse_bn_linear, fuse_conv_bn, fuse_linear_bn
from .heads import average_heads
from .layer_scale import LayerScale, fold_layer_scale

__all__ = ["fuse_conv_bn", "fuse_bn_linear", "fuse_linear_bn", "DropPath", "LayerScale", "fold_layer_scale",
           "AttentionBiasMixin", "attention_bias_index", "average_heads"]
