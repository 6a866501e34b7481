"""Learning-rate schedule after the YOLO v1 paper, stepped once per batch.

The paper warms up from 1e-3 to 1e-2 over the first epochs, holds 1e-2, then drops to 1e-3 and
1e-4. Here: a linear warm-up from base_lr / 10 to base_lr over `warmup` (a fraction of all
steps), then base_lr divided by 10 at each milestone (fractions of all steps, default 80% and 90%:
AdamW 1e-3 -> 1e-4 -> 1e-5; the last 30% of epochs also drop the augmentation, see TrainConfig).

The default optimizer is AdamW rather than the paper's SGD: from scratch on kitti_tiny (resnet18, 8
frames, 40 steps) SGD at 1e-2 stalled at loss 4.6 while AdamW reached 0.35 (3e-4, FC head). With the
conv head, AdamW 1e-3 fits 4 augmented frames where 3e-4 had not started after 50 steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from fastyolo.train.config import MILESTONES, WARMUP

SGD_LR = 1e-2
ADAM_LR = 1e-3
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4


def lr_factor(step: int, total_steps: int, warmup: float = WARMUP, milestones: Sequence[float] = MILESTONES) -> float:
    """Multiplier of base_lr at optimizer step `step` (0-based) of `total_steps`."""
    progress = step / max(total_steps, 1)
    if warmup > 0 and progress < warmup:
        return 0.1 + 0.9 * progress / warmup
    drops = sum(progress >= m for m in milestones)
    return 0.1**drops


def make_optimizer(model: torch.nn.Module, name: str = "sgd", lr: float | None = None) -> torch.optim.Optimizer:
    """SGD (momentum 0.9, weight decay 5e-4, as the paper) or AdamW (decoupled weight decay 5e-4; torch's fused
    kernel where the device has one)."""
    # No weight decay on BatchNorm weights and biases (they are scales and offsets, not filters).
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "sgd":
        # SGD's fused kernel: no clear gain on a CPU (ResNet-18 17.8 -> 19.2 ms, ResNet-50 44.0 -> 33.6 ms)
        return torch.optim.SGD(groups, lr=lr or SGD_LR, momentum=MOMENTUM)
    if name == "adam":
        return _fused_if_possible(torch.optim.AdamW, groups, lr=lr or ADAM_LR)
    raise ValueError(f"unknown optimizer {name!r}: choose sgd or adam")


def _fused_if_possible(kind: type[torch.optim.Optimizer], groups: list[dict], **options) -> torch.optim.Optimizer:
    """`kind` with torch's fused kernel (one pass over every parameter) where the parameters' device has one.

    torch's default on a CPU loops over the tensors one at a time: an AdamW step of ResNet-18 on 2 cores
    took 63.5 ms against 23.4 ms fused (ResNet-50: 102.4 / 39.4; bench/optimizer_step.py), at batch 16
    about a tenth of the bf16 training step. The same update up to rounding (tests/test_train.py).
    """
    try:
        return kind([dict(g) for g in groups], fused=True, **options)  # copies: a failed try fills in their keys
    except (RuntimeError, ValueError, TypeError):  # a device (or torch) without the fused kernel
        return kind(groups, **options)


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup: float = WARMUP,
    milestones: Sequence[float] = MILESTONES,
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over `total_steps` batches; its state_dict resumes it exactly."""
    milestones = tuple(milestones)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup, milestones))
