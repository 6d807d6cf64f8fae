"""Pretext tasks: one module per task, each a `PretextTask` subclass named in conf/task/.

`build_task` is the one place a task is made: from its config node, the backbone it will
train and the data set's facts. Every parameter a task has exists once it returns (heads
sized by the classes, layer-wise decoders sized by the backbone's stages), so pretraining,
a resumed pretraining and a reused one save and load the same set of modules.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from ssl_bench.errors import UserError, instantiate
from ssl_bench.tasks.base import DataFacts, PretextTask

__all__ = ["DataFacts", "PretextTask", "build_task"]


def build_task(module_cfg: DictConfig, backbone: Any, data: Any, device: torch.device | None = None,
               single_phase_for: str | None = None) -> PretextTask:
    """The task of `module_cfg` (a `task.module` node), fully built for `backbone` (anything
    with `out_channels()`: a `ConvBackbone` or a search network) and `data` (a `DataSplits`
    or its `DataFacts`), on `device` (default: where it was built).

    `single_phase_for`: refuse, naming it, a task that trains in phases (stage by stage),
    before anything is built: the architecture search trains all its cells together.
    """
    facts = data if isinstance(data, DataFacts) else DataFacts.of(data)
    task: PretextTask = instantiate(module_cfg, feature_dim=backbone.out_channels(),
                                    image_shape=facts.image_shape)
    if single_phase_for is not None and type(task).phases is not PretextTask.phases:
        raise UserError(f"{single_phase_for} trains the backbone in phases (stage by stage); a search "
                        f"trains all cells together: choose a single-phase pretext task")
    task.build(backbone, facts)
    return task.to(device) if device is not None else task
