"""The one training loop: every optimiser step in the project is taken by `train_steps`.

Pretraining, the frozen evaluator, the supervised baseline, the architecture search and
`ssl-bench-perf` differ only in where a batch comes from, what the loss is and what they
record, so those are its arguments; the step itself (shard, memory format, autocast,
forward and loss, `optim.sgd_step`) is written once, here, and reads top to bottom:

    batch -> this process's shard -> [before_step] -> autocast(forward: loss, outputs)
          -> backward, clip, SGD step, schedule step -> [after_step] -> progress bar

Hooks get what they need and nothing is read back from the device unless a hook asks
(`Step.loss` stays a device tensor), so a GPU loop never waits on the host per step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ssl_bench import distributed
from ssl_bench.device import autocast
from ssl_bench.optim import sgd_step

# (inputs, targets, scale) -> (loss, outputs): the model side of a step. `scale` is this
# process's share of the global batch (1 without torchrun), by which the loss is multiplied.
Forward = Callable[[Any, Any, float], tuple[torch.Tensor, Any]]
# () -> (inputs, targets, images): the next global batch and how many images built it
NextBatch = Callable[[], tuple[Any, Any, int]]


@dataclass
class Step:
    """What the hooks see of one step."""

    number: int           # steps taken so far in this run, this one included
    inputs: Any           # this process's shard of the batch, as the model saw it
    targets: Any
    loss: torch.Tensor    # this process's scaled loss, on the device
    outputs: Any


def to_memory_format(inputs: Any, memory_format: torch.memory_format) -> Any:
    """Image batches (4-D tensors, also inside dicts of them) in the given memory format."""
    if isinstance(inputs, dict):
        return {k: to_memory_format(v, memory_format) for k, v in inputs.items()}
    if isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
        return inputs.contiguous(memory_format=memory_format)
    return inputs


def train_steps(forward: Forward, next_batch: NextBatch, optimizer: torch.optim.Optimizer,
                schedule: torch.optim.lr_scheduler.LRScheduler | None, steps: int, *,
                device: torch.device, precision: str,
                memory_format: torch.memory_format | None = None, start: int = 0,
                shard: bool = True,
                diverged: Callable[[float, int], str] | None = None,
                clip: tuple[list[torch.nn.Parameter], float] | None = None,
                before_step: Callable[[Step], None] | None = None,
                after_step: Callable[[Step], None] | None = None,
                bar: Any = None) -> Step | None:
    """Take `steps` optimiser steps; returns the last one (None when `steps` is 0).

    - `start`: steps already taken (a resumed run), so `Step.number` counts the whole run;
    - `shard`: split each batch between the `torchrun` processes (a no-op in one process);
    - `memory_format`: convert the batch's images (None: leave them as built);
    - `diverged(loss, step)`: check every loss on the host and stop with that message when
      it is not finite (None: the caller checks its final loss instead, no per-step wait);
    - `clip`: (parameters, max norm) for gradient-norm clipping;
    - `before_step(step)`: runs once the batch exists, before the forward pass (`loss` and
      `outputs` are still None): the architecture search's α step;
    - `after_step(step)`: logging, metrics, anything per step; `bar` is updated once a step.
    """
    last: Step | None = None
    for number in range(start + 1, start + steps + 1):
        inputs, targets, images = next_batch()
        part = (distributed.shard(inputs, targets, images) if shard
                else distributed.Shard(inputs, targets, 1.0))
        if memory_format is not None:
            part.inputs = to_memory_format(part.inputs, memory_format)
        step = Step(number, part.inputs, part.targets, None, None)  # type: ignore[arg-type]
        if before_step is not None:
            before_step(step)
        with autocast(device, precision):
            step.loss, step.outputs = forward(step.inputs, step.targets, part.scale)
        sgd_step(step.loss, optimizer, schedule,
                 None if diverged is None else (lambda value, n=number: diverged(value, n)), clip)
        if after_step is not None:
            after_step(step)
        if bar is not None:
            bar.update(1)
        last = step
    return last
