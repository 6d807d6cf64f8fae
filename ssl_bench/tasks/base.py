"""The pretext-task interface.

A task turns a batch of unlabeled (already augmented, normalised) images into network
inputs and pseudo-labels with batched tensor operations, and owns everything specific to
it: its head, its loss and its pretext metric. The backbone is passed in, never owned, so
one backbone can serve several tasks and the evaluator sees only the backbone.

Adding a task = one file here with a subclass + one `conf/task/<name>.yaml` whose
`module._target_` names the class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.backbone import ConvBackbone


class PretextTask(nn.Module, ABC):
    """Base class: classification-style pretext tasks get loss and accuracy for free."""

    metric_name = "accuracy"  # what `metric` returns, logged and put in the leaderboard
    higher_is_better = True

    def __init__(self, feature_dim: int, image_shape: tuple[int, int, int]):
        super().__init__()
        self.feature_dim = feature_dim
        self.image_shape = tuple(image_shape)

    @abstractmethod
    def make_batch(self, images: torch.Tensor,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) from N×C×H×W float images, on the images' device."""

    @abstractmethod
    def forward(self, backbone: ConvBackbone, inputs: torch.Tensor) -> torch.Tensor:
        """The task's prediction for `inputs`, using the backbone and the task's head."""

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    @torch.no_grad()
    def metric(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        """Pretext accuracy in percent."""
        return (outputs.argmax(1) == targets).float().mean().item() * 100.0
