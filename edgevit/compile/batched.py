"""Running a model or an artifact over many inputs at its static batch size."""
from __future__ import annotations

import torch

__all__ = ["run_batched"]


@torch.no_grad()
def run_batched(run, inputs: torch.Tensor, batch: int, advance=lambda n: None) -> torch.Tensor:
    """Logits of ``run`` over ``inputs`` at a static ``batch``; a short last batch is padded and cut."""
    outs = []
    for start in range(0, len(inputs), batch):
        x = inputs[start:start + batch]
        n = len(x)
        if n < batch:
            x = torch.cat([x, x[-1:].expand(batch - n, *x.shape[1:])])
        outs.append(run(x)[:n].float())
        advance(n)
    return torch.cat(outs)
