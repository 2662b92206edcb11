"""The bit-accurate fixed-point reference: exactly what the HLS kernels compute, in numpy on raw integers.

Every tensor is an int64 array of raw ``ap_fixed`` values; every operation is the kernels' integer
arithmetic (exact products and sums, then one AP_RND + AP_SAT requantization; tables for exp / GELU,
Newton-refined reciprocal and rsqrt from :mod:`.mathfn`). The C-simulation must reproduce every dumped
tensor bit for bit, so the operation order here *is* the specification of the kernels:

- linear:     acc = x @ W + (b << (Fx + Fw - Fb)), exact; y = requantize(acc) [+ GELU | + residual]
- layernorm:  one pass of sum and sum of squares; mean (Fa+8) and E[x^2] by rounded integer division by D;
              var = E[x^2] - mean^2 (clamped at 0) + eps; r = rsqrt(var); n = round((x - mean) * r);
              y = requantize(n * gamma + beta)
- attention:  per head and query, keys in order, online softmax: running max m, running sum l and
              accumulator acc (Fa+8); a larger score rescales l and acc by exp(m_old - m_new); the output is
              acc * reciprocal(l) (normalisation deferred to the end, as Edge-MoE does)
- MoE gate:   logits = linear; top-k by raw value among the experts in the task's weight image, ties to the
              lower index; weights = exp(g - max) * reciprocal(sum), in the gate format
- experts:    per expert, its queued tokens in order: fc1 + GELU, fc2; contribution = round(y * weight);
              contributions summed exactly, then residual-added and saturated once (expert order is free)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .convert import MoeVitGraph
from .fixed import FixedFormat, FixedOverflowError, OverflowReport, quantize_checked, requantize_checked, round_shift
from .mathfn import EXP_FRAC, exp_neg, gelu, reciprocal, rsqrt

__all__ = ["Formats", "FixedRun", "QuantizedWeights", "run_reference", "dump_names", "ATTN_ACC_EXTRA", "RECIP_FRAC",
           "RSQRT_FRAC"]

ATTN_ACC_EXTRA = 8    # attention accumulator: Fa + 8 fraction bits (|acc| <= l * |v|max: no int64 overflow)
LN_MEAN_EXTRA = 8     # LayerNorm mean kept at Fa + 8 bits (its square fits int64 for act widths <= 24)
RECIP_FRAC = 24       # reciprocal of softmax sums (>= 1): <= 2^24 raw
RSQRT_FRAC = 24       # rsqrt of variance + eps: <= 1/sqrt(eps) * 2^24


@dataclass(frozen=True)
class Formats:
    """ap_fixed formats per tensor class (the manifest records them). Defaults: see tools/bench_fpga.py, which
    measures the error against fp32 for the candidates (Edge-MoE uses <32,10> features and <16,2> weights)."""

    act: FixedFormat = FixedFormat(24, 10)     # every activation tensor between kernels
    weight: FixedFormat = FixedFormat(16, 2)   # linear weights (DDR, 16-bit words)
    bias: FixedFormat = FixedFormat(32, 12)    # linear biases, per-token embedding bias (32-bit words)
    norm: FixedFormat = FixedFormat(16, 4)     # LayerNorm gamma / beta (16-bit words)
    gate: FixedFormat = FixedFormat(17, 1, signed=False)  # expert weights in [0, 1]

    def as_dict(self) -> dict:
        return {k: {"width": v.width, "int_bits": v.int_bits, "signed": v.signed, "type": str(v)}
                for k, v in ((k, getattr(self, k)) for k in asdict(self))}

    @classmethod
    def parse(cls, text: str | None) -> Formats:
        """``"act=24.10,weight=16.2"`` (class=WIDTH.INT_BITS, any subset) over the defaults; the CLI's --fixed."""
        from ...errors import EdgevitError

        if not text:
            return cls()
        fields = {}
        for item in text.split(","):
            name, _, value = item.partition("=")
            name = name.strip()
            try:
                width, int_bits = (int(v) for v in value.split("."))
            except ValueError:
                raise EdgevitError(f"--fixed '{item}' is not CLASS=WIDTH.INT_BITS (e.g. act=24.10).") from None
            if name not in cls.__dataclass_fields__:
                raise EdgevitError(f"--fixed: unknown tensor class '{name}'; the classes are "
                                   f"{', '.join(cls.__dataclass_fields__)}.")
            fields[name] = FixedFormat(width, int_bits, signed=name != "gate")
        return cls(**fields)

    @classmethod
    def from_dict(cls, data: dict) -> Formats:
        return cls(**{k: FixedFormat(v["width"], v["int_bits"], v.get("signed", True)) for k, v in data.items()})

    def check(self, graph: MoeVitGraph) -> None:
        """The int64 bounds the kernels rely on (see the module docstring)."""
        a, w = self.act, self.weight
        if a.width > 24 or w.width > 18:
            raise FixedOverflowError(f"act {a} / weight {w}: the kernels keep products and LayerNorm squares in "
                                     "64-bit integers, which needs act width <= 24 and weight width <= 18.")
        if self.bias.frac > a.frac + w.frac:
            raise FixedOverflowError(f"bias {self.bias} has more fraction bits than the accumulator "
                                     f"({a.frac + w.frac}); use fewer.")
        if graph.tokens > 256:
            raise FixedOverflowError(f"{graph.tokens} tokens: the attention accumulator is sized for <= 256.")


def dump_names(graph: MoeVitGraph) -> list[str]:
    """The tensors the C-simulation writes, in the order it writes them."""
    names = ["embed"]
    for i, b in enumerate(graph.blocks):
        p = f"blocks.{i}."
        names += [p + "norm1", p + "qkv", p + "attn", p + "x_attn", p + "norm2"]
        names += [p + "gate", p + "x"] if b.moe else [p + "fc1", p + "x"]
    return names + ["norm", "head"]


@dataclass
class FixedRun:
    """One image through the reference: every dumped tensor (raw), the routing, and any saturation seen."""

    tensors: dict[str, np.ndarray]
    expert_tokens: list[list[int]]          # [moe layer][expert] -> tokens routed there
    overflows: dict[str, OverflowReport] = field(default_factory=dict)

    def features(self, fmt: FixedFormat) -> np.ndarray:
        return self.tensors["norm"].astype(np.float64) * fmt.lsb


class QuantizedWeights:
    """The graph's weights as raw integers in their formats (what the weight image holds)."""

    def __init__(self, graph: MoeVitGraph, formats: Formats):
        self.raw: dict[str, np.ndarray] = {}
        self.overflow: dict[str, OverflowReport] = {}
        for name, value in graph.weights.items():
            kind = _param_kind(name)
            fmt = getattr(formats, kind)
            raw, report = quantize_checked(value, fmt)
            self.raw[name] = raw
            if not report.ok:
                self.overflow[name] = report


def _param_kind(name: str) -> str:
    if ".norm" in name or name.startswith("norm"):
        return "norm"
    return "bias" if name.endswith("bias") else "weight"


class _Reference:
    def __init__(self, graph: MoeVitGraph, formats: Formats, params: QuantizedWeights):
        self.g, self.f, self.p = graph, formats, params
        self.overflows: dict[str, OverflowReport] = {}

    def _requant(self, raw: np.ndarray, frac: int, name: str, fmt: FixedFormat | None = None) -> np.ndarray:
        out, report = requantize_checked(raw, frac, fmt or self.f.act)
        if not report.ok and name not in self.overflows:
            self.overflows[name] = report
        return out

    def linear(self, x: np.ndarray, prefix: str, name: str) -> np.ndarray:
        """Exact accumulate, then one rounding to the activation format."""
        a, w, b = self.f.act, self.f.weight, self.f.bias
        acc = _matmul(x, self.p.raw[prefix + ".weight"], a.width + w.width - 2)
        acc = acc + (self.p.raw[prefix + ".bias"] << (a.frac + w.frac - b.frac))
        return self._requant(acc, a.frac + w.frac, name)

    def layernorm(self, x: np.ndarray, prefix: str, name: str) -> np.ndarray:
        a, n = self.f.act, self.f.norm
        D = x.shape[-1]
        s1 = x.sum(axis=-1)
        s2 = (x * x).sum(axis=-1)
        mean = _div_round(s1 << LN_MEAN_EXTRA, D)                        # Fa + 8
        ex2 = _div_round(s2, D)                                          # 2 Fa
        var = np.maximum(ex2 - round_shift(mean * mean, 2 * LN_MEAN_EXTRA), 0)
        var = var + int(np.floor(self.g.ln_eps * 2.0 ** (2 * a.frac) + 0.5))
        r = rsqrt(var, 2 * a.frac, RSQRT_FRAC)
        centered = x - round_shift(mean, LN_MEAN_EXTRA)[..., None]
        normed = self._requant(centered * r[..., None], a.frac + RSQRT_FRAC, name + " (standardised)")
        gamma, beta = self.p.raw[prefix + ".weight"], self.p.raw[prefix + ".bias"]
        return self._requant(normed * gamma + (beta << a.frac), a.frac + n.frac, name)

    def attention(self, qkv: np.ndarray) -> np.ndarray:
        a = self.f.act
        T, D, H = self.g.tokens, self.g.dim, self.g.heads
        dh = D // H
        q, k, v = (qkv[:, i * D:(i + 1) * D].reshape(T, H, dh).transpose(1, 0, 2) for i in range(3))  # (H, T, dh)
        scores = self._requant(np.einsum("hqd,hkd->hqk", q, k), 2 * a.frac, "attention scores")
        X, E = ATTN_ACC_EXTRA, EXP_FRAC
        m = scores[:, :, 0].copy()
        lsum = np.full((H, T), 1 << E, dtype=np.int64)
        acc = np.repeat(v[:, :1, :] << X, T, axis=1)                     # (H, T, dh): query rows
        for j in range(1, T):
            s = scores[:, :, j]
            vj = v[:, j, None, :]                                        # (H, 1, dh)
            new_max = s > m
            e = exp_neg(-np.abs(s - m), a.frac)                           # exp(-(|s - m|)) at E
            lsum = np.where(new_max, round_shift(lsum * e, E) + (1 << E), lsum + e)
            acc = np.where(new_max[..., None], round_shift(acc * e[..., None], E) + (vj << X),
                           acc + round_shift(e[..., None] * vj, E - X))
            m = np.maximum(m, s)
        r = reciprocal(lsum, E, RECIP_FRAC)
        out = self._requant(acc * r[..., None], a.frac + X + RECIP_FRAC, "attention output")
        return out.transpose(1, 0, 2).reshape(T, D)

    def gate(self, x: np.ndarray, prefix: str, task: int, allowed: np.ndarray, name: str) -> np.ndarray:
        """(T, E) gate weights in the gate format, zero outside each token's top-k."""
        logits = self.linear(x, prefix + f".gate.{task}", name + " logits")
        T, E = logits.shape
        remaining = np.where(allowed[None, :], logits, np.iinfo(np.int64).min)
        picks = []
        for _ in range(self.g.top_k):
            best = np.argmax(remaining, axis=1)                          # first maximum: the lower index
            picks.append(best)
            remaining[np.arange(T), best] = np.iinfo(np.int64).min
        chosen = np.stack(picks, axis=1)                                 # (T, k), best first
        top = logits[np.arange(T), chosen[:, 0]]
        p = exp_neg(logits[np.arange(T)[:, None], chosen] - top[:, None], self.f.act.frac)   # (T, k) at E
        r = reciprocal(p.sum(axis=1), EXP_FRAC, RECIP_FRAC)
        wk = self._requant(p * r[:, None], EXP_FRAC + RECIP_FRAC, name, self.f.gate)
        weights = np.zeros((T, E), dtype=np.int64)
        weights[np.arange(T)[:, None], chosen] = wk
        return weights

    def experts(self, x: np.ndarray, weights: np.ndarray, prefix: str, allowed: np.ndarray
                ) -> tuple[np.ndarray, list[int]]:
        a, g = self.f.act, self.f.gate
        total = np.zeros_like(x)
        counts = []
        for e in range(weights.shape[1]):
            rows = np.flatnonzero(weights[:, e])                         # the expert's token queue, in order
            counts.append(int(rows.size))
            if not rows.size:
                continue
            assert allowed[e], "a pruned expert was selected"
            h = gelu(self.linear(x[rows], prefix + f".expert.{e}.fc1", prefix + f".expert.{e}.fc1"), a.frac)
            y = self.linear(h, prefix + f".expert.{e}.fc2", prefix + f".expert.{e}.fc2")
            total[rows] += round_shift(y * weights[rows, e, None], g.frac)
        return total, counts

    def run(self, patches: np.ndarray, task: int, expert_mask: np.ndarray) -> FixedRun:
        t: dict[str, np.ndarray] = {}
        a = self.f.act
        x_in, report = quantize_checked(patches, a)
        if not report.ok:
            self.overflows["input patches"] = report
        x = t["embed"] = self.linear(x_in, "embed", "embed")
        routing = []
        moe_index = 0
        for i, block in enumerate(self.g.blocks):
            p = f"blocks.{i}"
            h = t[p + ".norm1"] = self.layernorm(x, p + ".norm1", p + ".norm1")
            qkv = t[p + ".qkv"] = self.linear(h, p + ".qkv", p + ".qkv")
            att = t[p + ".attn"] = self.attention(qkv)
            x = t[p + ".x_attn"] = self._requant(self.linear(att, p + ".proj", p + ".proj") + x, a.frac,
                                                 p + ".x_attn")
            h = t[p + ".norm2"] = self.layernorm(x, p + ".norm2", p + ".norm2")
            if block.moe:
                allowed = expert_mask[moe_index]
                w = t[p + ".gate"] = self.gate(h, p, task, allowed, p + ".gate")
                y, counts = self.experts(h, w, p, allowed)
                routing.append(counts)
                moe_index += 1
            else:
                f1 = t[p + ".fc1"] = gelu(self.linear(h, p + ".fc1", p + ".fc1"), a.frac)
                y = self.linear(f1, p + ".fc2", p + ".fc2")
            x = t[p + ".x"] = self._requant(x + y, a.frac, p + ".x")
        feats = t["norm"] = self.layernorm(x, "norm", "norm")
        t["head"] = self.linear(feats[1:], f"head.{task}", "head")
        return FixedRun(t, routing, dict(self.overflows))


def _matmul(x: np.ndarray, w: np.ndarray, product_bits: int) -> np.ndarray:
    """Exact integer matmul. float64 BLAS is exact while every partial sum stays below 2^53; else int64."""
    bound_bits = product_bits + int(np.ceil(np.log2(max(x.shape[-1], 1)))) + 1
    if bound_bits <= 53:
        return np.rint(x.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
    return x @ w


def _div_round(a: np.ndarray, d: int) -> np.ndarray:
    """round(a / d), halves up, with floor division (the C++ twin floors the same way for negatives)."""
    return (2 * a + d) // (2 * d)


def run_reference(graph: MoeVitGraph, patches: np.ndarray, task: int = 0, formats: Formats | None = None,
                  expert_mask: np.ndarray | None = None, params: QuantizedWeights | None = None) -> FixedRun:
    """One image (``patches``: (tokens, patch_dim) floats, class row zero) through the fixed-point model.

    ``expert_mask`` (moe layers, experts): which experts the task's weight image holds (None: all)."""
    formats = formats or Formats()
    formats.check(graph)
    params = params or QuantizedWeights(graph, formats)
    if expert_mask is None:
        expert_mask = np.ones((len(graph.moe_blocks), graph.num_experts), dtype=bool)
    return _Reference(graph, formats, params).run(patches, task, expert_mask)
