"""Micro variants of the four families: 64x64 input, 10 classes, a few hundred thousand parameters.

They are not from any paper. They exist so that accuracy can be *measured* here, where no pretrained
weights can be downloaded: tests and ``tools/bench_accuracy.py`` train them in seconds to minutes on
small labelled sets (scikit-learn's digits, upsampled) and then quantize, lower and evaluate them like
any zoo model. Each keeps its family's structure (the attention blocks, the conv<->attention bridges,
LayerNorm vs BatchNorm), only narrower and shallower.
"""
from __future__ import annotations

from ._registry import register_model
from .efficientformer import EfficientFormer
from .efficientformer_v2 import EfficientFormerV2
from .shvit import SHViT
from .tiny_vit import TinyVit

__all__ = ["efficientformer_micro", "efficientformerv2_micro", "tiny_vit_micro", "shvit_micro"]

_META = dict(input_size=(3, 64, 64), num_classes=10, crop_pct=1.0, interpolation="bilinear",
             paper="edgevit micro variant (not a published model)")


@register_model("efficientformer_micro", family="efficientformer", fixed_input_size=True, **_META)
def efficientformer_micro(**kwargs) -> EfficientFormer:
    kwargs = {"num_classes": 10, "img_size": 64, **kwargs}
    return EfficientFormer(depths=(1, 1, 2, 2), embed_dims=(16, 32, 48, 64), num_vit=1, **kwargs)


@register_model("efficientformerv2_micro", family="efficientformer_v2", fixed_input_size=True, **_META)
def efficientformerv2_micro(**kwargs) -> EfficientFormerV2:
    kwargs = {"num_classes": 10, "img_size": 64, **kwargs}
    return EfficientFormerV2(depths=(1, 1, 2, 2), embed_dims=(16, 24, 48, 64), num_vit=1, **kwargs)


@register_model("tiny_vit_micro", family="tiny_vit", fixed_input_size=False, stride=32, **_META)
def tiny_vit_micro(img_size=None, **kwargs) -> TinyVit:
    del img_size  # window attention pads; nothing depends on the input size
    kwargs = {"num_classes": 10, **kwargs}
    # Windows divide the 64-px stage maps (16/8/4/2): no padding at its default size (other sizes pad).
    return TinyVit(embed_dims=(16, 32, 48, 64), depths=(1, 1, 2, 1), num_heads=(1, 2, 3, 4),
                   window_sizes=(4, 4, 4, 2), drop_path_rate=0.0, **kwargs)


@register_model("shvit_micro", family="shvit", fixed_input_size=False, stride=32, **_META)
def shvit_micro(img_size=None, **kwargs) -> SHViT:
    del img_size  # no position tables
    kwargs = {"num_classes": 10, **kwargs}
    return SHViT(embed_dim=(32, 48, 64), depth=(1, 2, 2), partial_dim=(8, 12, 16), qk_dim=(8, 8, 8),
                 types=("i", "s", "s"), **kwargs)
