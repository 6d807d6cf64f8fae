"""Multi-task self-supervision (Doersch & Zisserman 2017): one trunk, one head per task.

Every step, each member task builds its own inputs and pseudo-labels from the *same* batch
of `train.batch_size` images (so a step costs the sum of the members' steps, and every
member sees every image); the loss is the weighted sum of the members' losses. A member's
head therefore gets gradients only from its own loss, and the shared backbone gets the
weighted sum. Per-member losses and metrics are logged as `<member>_loss`,
`<member>_<metric>`; the primary metric is the first member's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from ssl_bench.backbone import ConvBackbone
from ssl_bench.errors import ConfigError, instantiate
from ssl_bench.tasks.base import DataFacts, Panel, PretextTask


class MultiTask(PretextTask):
    """Weighted sum of member pretext tasks sharing the backbone."""

    def __init__(self, feature_dim: int, image_shape: tuple[int, int, int],
                 members: Sequence[str], weights: Sequence[float], catalog: DictConfig):
        super().__init__(feature_dim, image_shape)
        members, weights = list(members), [float(w) for w in weights]
        unknown = [m for m in members if m not in catalog]
        if not members or unknown or len(weights) != len(members) or len(set(members)) != len(members):
            raise ConfigError(f"task.members must be distinct names from {sorted(catalog)} with one "
                              f"weight each (task.weights); got members={members} weights={weights}")
        self.tasks = nn.ModuleDict({
            m: instantiate(catalog[m].module, feature_dim=feature_dim, image_shape=image_shape)
            for m in members})
        self.weights = dict(zip(members, weights))
        first = self.tasks[members[0]]
        self.metric_name = f"{members[0]}_{first.metric_name}"
        self.higher_is_better = first.higher_is_better

    def build(self, backbone: ConvBackbone, data: DataFacts) -> None:
        super().build(backbone, data)
        for task in self.tasks.values():
            task.build(backbone, data)

    def make_batch(self, images: torch.Tensor, generator: torch.Generator,
                   labels: torch.Tensor | None = None) -> tuple[dict, dict]:
        batches = {m: t.make_batch(images, generator, labels) for m, t in self.tasks.items()}
        return {m: b[0] for m, b in batches.items()}, {m: b[1] for m, b in batches.items()}

    def forward(self, backbone: ConvBackbone, inputs: dict) -> dict:
        return {m: t(backbone, inputs[m]) for m, t in self.tasks.items()}

    @property
    def chance_level(self) -> float | None:
        """The first member's: its metric is the primary one."""
        return next(iter(self.tasks.values())).chance_level

    def member_losses(self, outputs: dict, targets: dict) -> dict[str, torch.Tensor]:
        return {m: t.loss(outputs[m], targets[m]) for m, t in self.tasks.items()}

    def loss(self, outputs: dict, targets: dict) -> torch.Tensor:
        losses = self.member_losses(outputs, targets)
        return sum(self.weights[m] * loss for m, loss in losses.items())

    @torch.no_grad()
    def metrics(self, outputs: dict, targets: dict) -> dict[str, float]:
        result = {f"{m}_loss": float(v) for m, v in self.member_losses(outputs, targets).items()}
        for m, t in self.tasks.items():
            result.update({f"{m}_{k}": v for k, v in t.metrics(outputs[m], targets[m]).items()})
        return result

    def examples(self, images: torch.Tensor, generator: torch.Generator) -> list[list[Panel]]:
        rows = []
        for m, t in self.tasks.items():
            rows += [[(img, f"{m}: {cap}") for img, cap in row] for row in t.examples(images, generator)]
        return rows

    def on_pretrain_end(self, backbone, images, run_dir) -> None:
        for t in self.tasks.values():
            t.on_pretrain_end(backbone, images, run_dir)
