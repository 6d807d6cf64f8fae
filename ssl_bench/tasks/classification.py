"""Supervised classification as a "pretext" task: the upper bound `supervised_pretrain`.

It trains the backbone on the real labels of every training image; the standard evaluator
then freezes conv1–conv2 as for any pretext task. It shows how close a pretext task gets to
what labels would give. The only task with `needs_labels`.
"""

from __future__ import annotations

import torch
from torch import nn

from ssl_bench.backbone import ConvBackbone
from ssl_bench.chance import chance_accuracy
from ssl_bench.errors import UserError
from ssl_bench.tasks.base import DataFacts, Panel, PretextTask


class ClassificationTask(PretextTask):
    """Predict the image's class from the pooled conv3 features."""

    needs_labels = True

    def __init__(self, feature_dim: int, image_shape: tuple[int, int, int]):
        super().__init__(feature_dim, image_shape)
        self.head: nn.Linear | None = None  # sized by build, once the classes are known

    def build(self, backbone: ConvBackbone, data: DataFacts) -> None:
        super().build(backbone, data)
        if not data.num_classes:
            raise UserError("supervised pretraining needs a labelled data set")
        self.head = nn.Linear(self.feature_dim, data.num_classes).to(self.pixel_mean.device)

    def make_batch(self, images: torch.Tensor, generator: torch.Generator,
                   labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if labels is None:
            raise ValueError("ClassificationTask needs the labels of its images")
        return images, labels

    def forward(self, backbone: ConvBackbone, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(backbone(inputs))

    def examples(self, images: torch.Tensor, generator: torch.Generator) -> list[list[Panel]]:
        """Each image as it is: the target is its label, which `examples` is not given."""
        return [[(image, "target: its class")] for image in images]

    @property
    def chance_level(self) -> float | None:
        return chance_accuracy(self.head.out_features) if self.head is not None else None
