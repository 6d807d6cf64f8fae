"""Rotation prediction (RotNet, Gidaris et al. 2018).

Every image appears in the batch under all configured rotations and the network predicts
which rotation it sees. RotNet found 4 rotations (0/90/180/270) best on CIFAR-10 (89.06%
vs 88.51% for 8 and 87.46% for 2) and that putting all rotations of an image in the same
batch matters; both are the defaults here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ssl_bench.backbone import ConvBackbone
from ssl_bench.chance import chance_accuracy
from ssl_bench.errors import ConfigError
from ssl_bench.tasks.base import Panel, PretextTask


class RotationTask(PretextTask):
    """Predict the rotation (one of `angles`, multiples of 90°) applied to each image."""

    def __init__(self, feature_dim: int, image_shape: tuple[int, int, int],
                 angles: Sequence[int] = (0, 90, 180, 270)):
        super().__init__(feature_dim, image_shape)
        angles = [int(a) for a in angles]
        if len(set(angles)) != len(angles) or len(angles) < 2 or any(a % 90 for a in angles):
            raise ConfigError(f"task.module.angles must be 2+ distinct multiples of 90, got {angles}")
        if image_shape[1] != image_shape[2] and any(a % 180 for a in angles):
            raise ConfigError("90° rotations need square images; set data.image_size")
        self.angles = angles
        self.head = nn.Linear(feature_dim, len(angles))

    def make_batch(self, images: torch.Tensor, generator: torch.Generator,
                   labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """N images -> (R·N rotated images, R·N labels): copy r of image i sits at r·N + i."""
        n = images.shape[0]
        inputs = torch.cat([torch.rot90(images, a // 90, dims=(2, 3)) for a in self.angles])
        targets = torch.arange(len(self.angles), device=images.device).repeat_interleave(n)
        return inputs, targets

    def forward(self, backbone: ConvBackbone, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(backbone(inputs))

    @property
    def chance_level(self) -> float:
        return chance_accuracy(len(self.angles))

    def examples(self, images: torch.Tensor, generator: torch.Generator) -> list[list[Panel]]:
        inputs, targets = self.make_batch(images, generator)
        n = len(images)
        return [[(inputs[r * n + i], f"{self.angles[int(targets[r * n + i])]}°")
                 for r in range(len(self.angles))] for i in range(n)]

    def per_sample_labels(self) -> RotationLabels:
        return RotationLabels(self)


# ---- the per-sample reference pipeline (`ssl-bench-perf` times it against make_batch)


class RotationLabels:
    """Every rotation of the sample (R×C×H×W) and their indices, as RotNet's loaders do."""

    def __init__(self, task: RotationTask):
        self.turns = [a // 90 for a in task.angles]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rotated = torch.stack([torch.rot90(x, k, dims=(1, 2)) for k in self.turns])
        return rotated, torch.arange(len(self.turns))
