"""What a static int8 quantization does, as one value: observer, calibration size, ViT-aware steps.

The recipe builds torchao ``QuantizationConfig`` objects (the observers and int8 ranges) and says which
graph nodes stay float; a backend's quantizer decides which patterns its kernels take
(``backends/executorch/quantizer.py``). Defaults are the settings that measured best on the trained
micro models (README, "Quantization").
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch.fx import Node
from torchao.quantization.pt2e import PerChannelMinMaxObserver
from torchao.quantization.pt2e.quantizer import QuantizationConfig, QuantizationSpec

from ..errors import UnknownNameError
from .layers import LAYER_OPS, module_types, quantizable_layers
from .observers import OBSERVERS, activation_observer, check_observer

__all__ = ["QuantRecipe", "DEFAULT_OBSERVER", "PTQ_STEPS"]

DEFAULT_OBSERVER = "minmax"  # measured best on the trained micro models (README "Quantization")
_EPS = 2**-12  # smallest activation scale, as in XNNPACK's own quantizer config
# Smallest per-channel weight scale. XNNPACK's quantizer config floors weights at 2**-12 too (PyTorch's
# qconfig.py: it kept input * kernel / output scale >= 2**-32, a QNNPACK requantization limit; XNNPACK's
# qs8/qc8w conv and fully-connected operators check only < 256). A floor of 2**-12 rounds every channel
# whose |w| stays below 127 * 2**-12 = 0.031 to a few levels: weights with a small layer scale folded in
# (MobileNetV4-Hybrid's projections, max |w| ~ 1e-3) kept 4 levels (micro, Fashion-MNIST: 12.9 -> 24.6 dB).
# At 2**-20 the product still clears 2**-32 for any output scale <= 1 (the MCU kernels zero below it).
_WEIGHT_EPS = 2**-20

# CLI step name -> recipe field.
PTQ_STEPS = {"float-norm": "float_norm", "float-scores": "float_scores", "rescale-norm": "rescale_norm",
             "float-bridges": "float_bridges", "bias-correction": "bias_correction",
             "bias-correction-heads": "bias_correction_heads", "bias-correction-folded": "bias_correction_folded",
             "equalize-stream": "equalize_stream"}


@dataclass(frozen=True)
class QuantRecipe:
    observer: str = DEFAULT_OBSERVER
    num_calib: int = 32
    # ViT-aware steps (see README "Quantization" for what each measured):
    float_norm: bool = True          # LayerNorm/GroupNorm statistics (mean, var, rsqrt) stay float
    float_scores: bool = False       # attention logits + bias (the softmax input) stay float
    rescale_norm: bool = False       # RepQ-ViT-style per-channel rescale of normalised activations
    float_bridges: bool = False      # the conv<->attention bridge module (bridge_module) stays float
    bias_correction: bool = True     # empirical bias correction after convert (SQNR up on all four)
    # ... of the heads too (layers whose output is the model's output). Off: a head has no later layer for
    # its mean shift to propagate into, and correcting it fits the logits to the calibration images.
    bias_correction_heads: bool = False
    # ... of the convs PT2E folds a BatchNorm into (a user's module's; the zoo's deploy forms have none),
    # measured against the BatchNorm's output (EfficientNet-Lite0: logit cosine worst image 0.979 -> 0.992).
    bias_correction_folded: bool = True
    # Per-channel equalisation of un-normalised residual streams (a model's ``residual_streams()``, SHViT):
    # exact in fp32, run before calibration (``equalize.py``).
    equalize_stream: bool = True
    fp32_layers: tuple[str, ...] = field(default_factory=tuple)   # mixed precision: layers left float
    # Class name of the model's first conv->attention bridge (the family's FamilySpec.bridge_module);
    # None: float_bridges keeps nothing float.
    bridge_module: str | None = None
    # The family's FamilySpec.float_modules: deploy-form module classes whose ops always stay float (a rule,
    # not a step: e.g. EfficientViT's ReLU-attention division), and the layers that rule resolved to in the
    # exported graph (``for_family``), recorded in the manifest apart from the user's --fp32-layer choices.
    float_modules: tuple[str, ...] = ()
    rule_fp32_layers: tuple[str, ...] = ()

    def __post_init__(self):
        check_observer(self.observer)

    @classmethod
    def from_steps(cls, steps: list[str] | None = None, **kwargs) -> QuantRecipe:
        """A recipe with exactly the named ViT-aware ``steps`` (None: the defaults; [] or ["none"]: none)."""
        if steps is None:
            return cls(**kwargs)
        unknown = [s for s in steps if s not in PTQ_STEPS and s != "none"]
        if unknown:
            raise UnknownNameError("PTQ step", unknown[0], [*PTQ_STEPS, "none"])
        return cls(**{field: name in steps for name, field in PTQ_STEPS.items()}, **kwargs)

    def with_fp32_layers(self, layers) -> QuantRecipe:
        return replace(self, fp32_layers=tuple(layers))

    def for_family(self, family, graph: torch.fx.Graph) -> QuantRecipe:
        """This recipe with a family's facts (``FamilySpec`` or None): its bridge module, and its float rule
        resolved into layer names of ``graph`` (the exported deploy form)."""
        if family is None:
            return replace(self, bridge_module=None, float_modules=(), rule_fp32_layers=())
        modules = tuple(getattr(family, "float_modules", ()))
        return replace(self, bridge_module=family.bridge_module, float_modules=modules,
                       rule_fp32_layers=tuple(rule_layers(graph, modules)))

    @property
    def calibration_batch(self) -> int | None:
        """Images per calibration call: 1 for the moving average (an average over images), else the
        flow's default batch."""
        return 1 if self.observer == "moving-average" else None

    def quantization_config(self) -> QuantizationConfig:
        """int8 per-tensor affine activations with this recipe's observer, int8 per-channel symmetric
        weights (min/max: weights are known exactly, nothing to estimate)."""
        act = QuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine,
                               observer_or_fake_quant_ctr=activation_observer(self.observer, self.num_calib, _EPS))
        weight = QuantizationSpec(dtype=torch.int8, quant_min=-127, quant_max=127,
                                  qscheme=torch.per_channel_symmetric, ch_axis=0,
                                  observer_or_fake_quant_ctr=PerChannelMinMaxObserver.with_args(eps=_WEIGHT_EPS))
        return QuantizationConfig(act, act, weight, None, False)

    def keeps_float(self, node: Node) -> bool:
        """True for a node this recipe leaves unquantized (the quantizer's annotation filter)."""
        types = module_types(node)
        if self.float_modules and any(t in self.float_modules for t in types):
            return True  # the family rule: every op inside (divisions, their operands), not only the layers
        if self.float_norm and any(t.endswith("Standardize") for t in types):
            return True
        if self.float_scores and node.target == torch.ops.aten.add.Tensor and any(
                user.target in (torch.ops.aten.softmax.int, torch.ops.aten._softmax.default)
                for user in node.users):
            return True
        if self.float_bridges and _bridge_path(node.graph, self.bridge_module) in _paths(node):
            return True
        if self.fp32_layers and node.target in LAYER_OPS:
            return _layer_name(node) in self.fp32_layers
        return False

    def describe(self) -> dict:
        """The manifest's ``quantization`` block (what ran is added by the flow)."""
        return {"scheme": "static int8: per-channel symmetric weights, per-tensor affine activations",
                "observer": self.observer, "observer_detail": OBSERVERS[self.observer][1],
                "calibration_count": self.num_calib,
                "vit_aware": {"float_norm_statistics": self.float_norm, "float_attention_scores": self.float_scores,
                              "rescale_norm": self.rescale_norm, "float_bridges": self.float_bridges,
                              "bias_correction": self.bias_correction,
                              "bias_correction_heads": self.bias_correction and self.bias_correction_heads,
                              "bias_correction_folded": self.bias_correction and self.bias_correction_folded,
                              "equalize_stream": self.equalize_stream},
                "fp32_layers": list(dict.fromkeys(self.fp32_layers + self.rule_fp32_layers)),
                **({"float_by_family_rule": {"modules": list(self.float_modules),
                                             "fp32_layers": list(self.rule_fp32_layers)}}
                   if self.float_modules else {})}


def rule_layers(graph: torch.fx.Graph, modules: tuple[str, ...]) -> list[str]:
    """Names (:func:`quantizable_layers` terms) of the layers inside any module of a class in ``modules``."""
    if not modules:
        return []
    return [name for name, node in quantizable_layers(graph).items()
            if any(t in modules for t in module_types(node))]


def _paths(node: Node) -> list[str]:
    return [path for path, _ in (node.meta.get("nn_module_stack") or {}).values()]


def _bridge_path(graph: torch.fx.Graph, cls: str | None) -> str | None:
    """Module path of the first module of class ``cls`` in ``graph`` (memoised on the graph)."""
    memo = graph.__dict__.setdefault("_edgevit_bridge", {})
    if cls not in memo:
        memo[cls] = None
        for node in graph.nodes if cls else ():
            match = [path for path, t in (node.meta.get("nn_module_stack") or {}).values()
                     if (t.__name__ if isinstance(t, type) else str(t).rsplit(".", 1)[-1]) == cls]
            if match:
                memo[cls] = match[0]
                break
    return memo[cls]


def _layer_name(node: Node) -> str:
    """The node's name in :func:`quantizable_layers` terms (needs the whole graph for the ``#k`` suffix;
    computed once per graph, the quantizer asks for every node)."""
    memo = node.graph.__dict__
    if "_edgevit_layer_names" not in memo:  # a memo on the graph being annotated
        memo["_edgevit_layer_names"] = {other: name for name, other in quantizable_layers(node.graph).items()}
    return memo["_edgevit_layer_names"].get(node, "")
