"""How close a lowered artifact is to the fp32 eager model."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

__all__ = ["Agreement", "compare_outputs", "Thresholds", "DEFAULT_THRESHOLDS"]


@dataclass(frozen=True)
class Agreement:
    sqnr_db: float          # 10 log10(|ref|^2 / |ref - out|^2) over all logits
    max_abs_error: float
    cosine: float           # mean over samples of cos(ref_i, out_i)
    top1_agreement: float   # fraction with the same argmax over the class dim (dim 1): per sample for
                            # (N, classes) logits, per position for dense maps (N, classes, H, W)
    samples: int

    def as_dict(self) -> dict:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Thresholds:
    min_sqnr_db: float
    min_cosine: float

    def failures(self, a: Agreement) -> list[str]:
        out = []
        if not a.sqnr_db >= self.min_sqnr_db:
            out.append(f"SQNR {a.sqnr_db:.2f} dB < {self.min_sqnr_db:g} dB")
        if not a.cosine >= self.min_cosine:
            out.append(f"cosine {a.cosine:.5f} < {self.min_cosine:g}")
        return out


# int8 is judged on cosine and SQNR, not top-1: the zoo's randomly initialised models have near-tied
# logits, where argmax flips carry no information. Override with --min-sqnr / --min-cosine.
DEFAULT_THRESHOLDS = {
    "fp32": Thresholds(min_sqnr_db=60.0, min_cosine=0.99999),
    "fp16": Thresholds(min_sqnr_db=30.0, min_cosine=0.999),
    "int8": Thresholds(min_sqnr_db=15.0, min_cosine=0.98),
    "int8-dynamic": Thresholds(min_sqnr_db=15.0, min_cosine=0.98),
}


def compare_outputs(reference: torch.Tensor, output: torch.Tensor) -> Agreement:
    """SQNR and max error over everything, cosine per sample (all its outputs), top-1 over dim 1."""
    ref, out = reference.detach().double(), output.detach().double()
    top1 = (ref.argmax(1) == out.argmax(1)).double().mean()
    ref, out = ref.flatten(1), out.flatten(1)
    noise = (ref - out).pow(2).sum()
    signal = ref.pow(2).sum()
    sqnr = float("inf") if noise == 0 else float(10 * torch.log10(signal / noise))
    cosine = torch.nn.functional.cosine_similarity(ref, out, dim=1).mean()
    return Agreement(sqnr_db=sqnr, max_abs_error=float((ref - out).abs().max()), cosine=float(cosine),
                     top1_agreement=float(top1), samples=ref.shape[0])
