"""Learning-rate schedule: linear warmup, cosine decay, and a floor."""

from __future__ import annotations

import math


def cosine_lr(step: int, max_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """LR for optimizer step ``step`` (0-based).

    Warmup rises linearly from ``max_lr / warmup_steps`` to ``max_lr`` at ``step = warmup_steps - 1``;
    cosine then decays to ``min_lr`` at ``total_steps - 1`` and stays there (the floor).
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)
