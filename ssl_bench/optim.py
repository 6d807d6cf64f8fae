"""Optimiser, learning-rate schedule and optimiser step shared by every training loop.

Schedules are stepped once per optimiser step (not per epoch), so a run's schedule
depends only on its step count, whatever the batch or data-set size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch

from ssl_bench.errors import ConfigError, NonFiniteLossError


def make_optimizer(params: Iterable[torch.nn.Parameter], lr: float, momentum: float = 0.9,
                   nesterov: bool = True, weight_decay: float = 5e-4) -> torch.optim.SGD:
    """SGD with (Nesterov) momentum, RotNet's optimiser."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov,
                           weight_decay=weight_decay)


def make_schedule(optimizer: torch.optim.Optimizer, name: str, total_steps: int,
                  milestones: Sequence[float] = (), gamma: float = 0.2,
                  warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LR multiplier: linear warm-up, then `cosine` to 0, `step` or `constant`.

    `milestones` for `step` are fractions of training (e.g. [0.3, 0.6, 0.8] is RotNet's
    60/120/160 of 200 epochs), so the same config scales to any length.
    """
    if name not in ("cosine", "step", "constant"):
        raise ConfigError(f"schedule must be cosine, step or constant, got {name!r}")
    total_steps = max(int(total_steps), 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        if name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        if name == "step":
            return gamma ** sum(step >= m * total_steps for m in milestones)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def sgd_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
             schedule: torch.optim.lr_scheduler.LRScheduler | None,
             diverged: Callable[[float], str] | None = None,
             clip: tuple[Iterable[torch.nn.Parameter], float] | None = None) -> None:
    """One optimiser step, the same in every training loop (pretraining, evaluator, search,
    perf): backward, optional gradient clipping, step, schedule step.

    With `diverged`, a non-finite loss stops training first, with the message
    `diverged(loss)` (where it happened and what to change). It reads the loss on the host,
    which waits for the device: loops that must not wait every step pass None and check
    their final loss instead.
    """
    if diverged is not None and not torch.isfinite(loss):
        raise NonFiniteLossError(diverged(loss.item()))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(clip[0], clip[1])
    optimizer.step()
    if schedule is not None:
        schedule.step()
