"""Blocks shared by several model families."""
from .fusion import fuse_conv_bn, fuse_bn_linear, fuse_linear_bn
from .drop import DropPath
from .layer_scale import LayerScale, fold_layer_scale
from .attention_bias import AttentionBiasMixin, attention_bias_index
from .heads import average_heads

__all__ = ["fuse_conv_bn", "fuse_bn_linear", "fuse_linear_bn", "DropPath", "LayerScale", "fold_layer_scale",
           "AttentionBiasMixin", "attention_bias_index", "average_heads"]
