"""A plain supervised loop (AdamW + cosine schedule + label smoothing) and top-k accuracy.

Deliberately small: the models it trains are the micro variants on small sets, where a few epochs on
two CPU cores reach a real accuracy that quantization can then lose.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["train_classifier", "evaluate_logits", "topk_accuracy", "augment_shift"]


def augment_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 4) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels (edge-padded): cheap, label-preserving for digits."""
    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=generator))
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    h, w = x.shape[-2:]
    return padded[..., max_shift + dy:max_shift + dy + h, max_shift + dx:max_shift + dx + w]


def _logits(output) -> torch.Tensor:
    # Distilled models (EfficientFormer/V2) may return (head, head_dist) in training.
    return (output[0] + output[1]) / 2 if isinstance(output, tuple) else output


def train_classifier(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, epochs: int,
                     lr: float = 2e-3, batch_size: int = 64, weight_decay: float = 0.05, seed: int = 0,
                     augment: Callable | None = augment_shift,
                     on_step: Callable[[int, float], None] | None = None,
                     param_groups: list[dict] | None = None) -> list[float]:
    """Train in place; returns the mean loss of each epoch. ``on_step(step, loss)`` drives a progress bar.
    ``param_groups``: AdamW parameter groups (each may set its own peak "lr"; default: every parameter at ``lr``)."""
    g = torch.Generator().manual_seed(seed)
    steps_per_epoch = -(-len(labels) // batch_size)
    optimizer = torch.optim.AdamW(param_groups or model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
                                                   total_steps=epochs * steps_per_epoch, pct_start=0.15)
    history = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=g)
        total = 0.0
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            x = inputs[idx]
            if augment is not None:
                x = augment(x, g)
            loss = F.cross_entropy(_logits(model(x)), labels[idx], label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
            if on_step is not None:
                on_step(len(history) * steps_per_epoch + i, loss.item())
        history.append(total / len(labels))
    model.eval()
    return history


def evaluate_logits(forward: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
                    batch_size: int = 1) -> torch.Tensor:
    """Logits of ``forward`` (an eager model or an artifact runner) over ``inputs``, in batches of
    ``batch_size`` (1 for artifacts compiled at a static batch of 1)."""
    with torch.no_grad():
        return torch.cat([_logits(forward(inputs[i:i + batch_size])).float()
                          for i in range(0, len(inputs), batch_size)])


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """{"top1": %, "top5": %} (percent, as papers report)."""
    ranked = logits.topk(max(ks), dim=1).indices
    hits = ranked == labels.view(-1, 1)
    return {f"top{k}": float(hits[:, :k].any(dim=1).float().mean() * 100) for k in ks}
