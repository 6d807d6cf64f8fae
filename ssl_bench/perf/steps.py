"""What both pipelines share: the composed config, the backbone and task as `run` builds them,
the model side of a pretraining step, and our batched path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from hydra import compose
from omegaconf import DictConfig

from ssl_bench import configs, tasks
from ssl_bench.backbone import ConvBackbone
from ssl_bench.batching import index_batches
from ssl_bench.data.augment import augment, to_float
from ssl_bench.data.imageset import DataSplits
from ssl_bench.errors import UserError
from ssl_bench.loop import Step, train_steps
from ssl_bench.methods import PRETEXT_TASKS
from ssl_bench.optim import make_optimizer, make_schedule
from ssl_bench.run import build_backbone
from ssl_bench.tasks.base import PretextTask
from ssl_bench.train import PretextStep, enter_phase

TASKS = PRETEXT_TASKS  # each has a per-sample reference pipeline below
# whole-step speed-up goals: the patch tasks' per-sample work (9 tiles, 2 patches) is where
# per-sample pipelines hurt most; rotation and inpainting steps are dominated by the model
PRETRAIN_GOALS = {"rotation": 1.1, "jigsaw": 3.0, "relative_position": 3.0, "inpainting": 1.1}
DEFAULT_DATA_ROOT = "../shared/data/cifar10-jpeg"
SEED = 0


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The project's composed Hydra config (`conf/config.yaml`) with `overrides`; an override
    Hydra cannot apply (a typo, an unknown option) is the user's to fix: a `UserError`."""
    from hydra.errors import HydraException

    with configs.initialize():
        try:
            return compose("config", overrides=list(overrides))
        except HydraException as exc:
            raise UserError(f"cannot apply the overrides {' '.join(overrides)}: "
                            f"{' '.join(str(exc).split())}") from None


def data_overrides(root: Path, quick: bool, user: Sequence[str]) -> tuple[list[str], str | None]:
    """Overrides selecting the real CIFAR-10 at `root`, or the synthetic set when it is missing.

    Returns the overrides and a note when the synthetic fallback was taken.
    """
    if any(o.startswith(("data=", "data.root=")) for o in user):
        return [], None  # the user chose the data set
    if root.exists():
        return [f"data.root={root}"] + (["data.max_train=2000", "data.max_test=1000"] if quick else []), None
    note = (f"data root {root} does not exist: measured on the synthetic data set (data=synthetic), "
            "not CIFAR-10; the conventional pipeline serves it from memory")
    return ["data=synthetic"] + (["data.num_train=512", "data.num_test=256"] if quick else []), note


# --------------------------------------------------------------------------- models, steps


def make_backbone(backbone_cfg: DictConfig, device: torch.device, channels_last: bool) -> ConvBackbone:
    """The backbone as `run` builds it: seeded initialisation, on `device`, channels_last as configured."""
    backbone = build_backbone(backbone_cfg, SEED).to(device)
    return backbone.to(memory_format=torch.channels_last) if channels_last else backbone


def build_task(cfg: DictConfig, data: DataSplits, device: torch.device) -> tuple[ConvBackbone, PretextTask]:
    """Backbone and pretext task as `run` builds them."""
    backbone = make_backbone(cfg.backbone, device, cfg.channels_last)
    return backbone, tasks.build_task(cfg.task.module, backbone, data, device)


class Trainer:
    """The model side of one pretraining step, shared by both pipelines.

    What `train.pretrain` does with a batch once it exists: the project's one training loop
    (`loop.train_steps`: forward and loss under the configured autocast, the finite-loss
    check, backward, SGD step, schedule step) and the per-step pretext metrics. Only where
    the batch comes from differs.
    """

    def __init__(self, backbone: ConvBackbone, task: PretextTask, cfg: DictConfig, device: torch.device):
        self.task, self.device = task, device
        self.precision = cfg.precision
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        params = enter_phase(backbone, task, task.phases(backbone)[0])
        self.model = PretextStep(backbone, task)
        self.optimizer = make_optimizer(params, **cfg.train.optimizer)
        self.schedule = make_schedule(self.optimizer, total_steps=1_000_000, warmup_steps=0, **{
            k: v for k, v in cfg.train.schedule.items() if k != "warmup_epochs"})

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        def metrics(step: Step) -> None:
            self.task.metrics(step.outputs, step.targets)

        train_steps(self.model, lambda: (inputs, targets, 0), self.optimizer, self.schedule, 1,
                    device=self.device, precision=self.precision, memory_format=self.memory_format,
                    shard=False, diverged=lambda value, n: (
                        f"loss became {value} while timing {type(self.task).__name__}"),
                    after_step=metrics)


class OurBatches:
    """Batches as `train.pretrain` builds them: uint8 index -> to_float -> augment -> make_batch."""

    def __init__(self, images: torch.Tensor, data: DataSplits, task: PretextTask, cfg: DictConfig,
                 batch_size: int, device: torch.device):
        self.images = images
        self.mean, self.std = data.mean.to(device), data.std.to(device)
        self.task, self.augment_cfg, self.device = task, cfg.train.augment, device
        self.batches = index_batches(len(images), batch_size, SEED)
        self.gen = torch.Generator(device=device).manual_seed(SEED + 1)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = next(self.batches).to(self.device)
        x = augment(to_float(self.images[idx], self.mean, self.std), self.augment_cfg.crop_padding,
                    self.augment_cfg.flip, self.gen)
        return self.task.make_batch(x, self.gen, None)
