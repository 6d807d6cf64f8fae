"""A pretext task of your own, kept outside the repository: was the image turned upside down?

ssl-bench runs it like its own tasks once two things are visible to it: this module on
PYTHONPATH, and the folder holding `task/vflip.yaml` on Hydra's search path:

    PYTHONPATH=examples/user_task ssl-bench 'hydra.searchpath=[file://examples/user_task/conf]' \\
        task=vflip profile=smoke data=synthetic

Only the interface of `ssl_bench.tasks.base.PretextTask` is used: `__init__` takes the
config's settings, `make_batch` turns a batch of images into inputs and pseudo-labels, and
`forward` runs the backbone and the task's own head. Loss and accuracy come from the base
class (a classification), the chance level from the number of classes. This file is the
README's example and is run by tests/test_user_task.py, so it stays a working one.
"""

from __future__ import annotations

import torch
from torch import nn

from ssl_bench.backbone import ConvBackbone
from ssl_bench.tasks.base import PretextTask


class VerticalFlipTask(PretextTask):
    """Predict whether each image was flipped top to bottom (2 classes).

    `both_ways=True` puts every image in the batch twice, upright and flipped, as RotNet does
    with its rotations; `False` flips each image or not at random (from the given generator,
    so a seeded pretraining repeats).
    """

    def __init__(self, feature_dim: int, image_shape: tuple[int, int, int], both_ways: bool = True):
        super().__init__(feature_dim, image_shape)
        self.both_ways = bool(both_ways)
        self.head = nn.Linear(feature_dim, 2)

    def make_batch(self, images: torch.Tensor, generator: torch.Generator,
                   labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """N images -> inputs and targets (0 upright, 1 flipped), on the images' device."""
        n = images.shape[0]
        if self.both_ways:
            targets = torch.arange(2, device=images.device).repeat_interleave(n)
            return torch.cat([images, images.flip(2)]), targets
        targets = torch.randint(0, 2, (n,), generator=generator, device=generator.device).to(images.device)
        flipped = targets.view(n, 1, 1, 1).bool()
        return torch.where(flipped, images.flip(2), images), targets

    def forward(self, backbone: ConvBackbone, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(backbone(inputs))

    @property
    def chance_level(self) -> float:
        return 50.0  # two classes, equally often
