"""Greedy layer-wise pretraining (the pre-2010 recipe, e.g. Bengio et al. 2006).

Stage by stage: train conv1 as a convolutional autoencoder that reconstructs the image,
freeze it, train conv2 to reconstruct conv1's output, and so on up to `stages[-1]`. Each
stage is one pretraining phase with `train.epochs` epochs; the frozen stages below it run
in eval mode without gradients, so they stay bit-identical. The decoder of a stage is one
upsampling step (if the stage pools) and one 3×3 conv back to the stage's input channels.
`noise_std` > 0 makes each autoencoder denoising: Gaussian noise of that many standard
deviations of the stage's input is added before encoding; the target stays clean.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.backbone import STAGES, ConvBackbone
from ssl_bench.errors import ConfigError
from ssl_bench.tasks.base import DataFacts, Panel, Phase, PretextTask


class LayerwiseTask(PretextTask):
    """Stacked convolutional autoencoders, trained one stage at a time."""

    metric_name = "recon_mse"
    higher_is_better = False

    def __init__(self, feature_dim: int, image_shape: tuple[int, int, int],
                 stages: Sequence[str] = ("conv1", "conv2"), noise_std: float = 0.0):
        super().__init__(feature_dim, image_shape)
        stages = list(stages)
        if not stages or stages != list(STAGES[:len(stages)]):
            raise ConfigError(f"task.module.stages must be a prefix of {list(STAGES)}, got {stages}")
        self.stages, self.noise_std = stages, noise_std
        self.decoders = nn.ModuleDict()  # one per stage, made by build()
        self.stage = stages[0]

    def build(self, backbone: ConvBackbone, data: DataFacts) -> None:
        """One decoder per trained stage, back to the stage's input channels."""
        super().build(backbone, data)
        channels = self.image_shape[0]
        device = next(backbone.parameters()).device
        for stage in self.stages:
            layers: list[nn.Module] = []
            if backbone.specs[stage].pool is not None:
                layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            layers.append(nn.Conv2d(backbone.out_channels(stage), channels, 3, padding=1))
            self.decoders[stage] = nn.Sequential(*layers).to(device)
            channels = backbone.out_channels(stage)

    def phases(self, backbone: ConvBackbone) -> list[Phase]:
        if set(self.decoders) != set(self.stages):
            raise RuntimeError("LayerwiseTask has no decoders: make tasks with ssl_bench.tasks.build_task")
        return [Phase(s, [getattr(backbone, s), self.decoders[s]]) for s in self.stages]

    def set_phase(self, phase: Phase) -> None:
        self.stage = phase.name

    def make_batch(self, images: torch.Tensor, generator: torch.Generator,
                   labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return images, images  # the stage's real input and target are computed in forward

    def examples(self, images: torch.Tensor, generator: torch.Generator) -> list[list[Panel]]:
        """The first stage's autoencoder: the image in (noisy if denoising), the clean image out
        (the stages above take feature maps, which are no pictures)."""
        noisy = images
        if self.noise_std > 0:
            noise = torch.randn(images.shape, generator=generator, device=images.device)
            noisy = images + self.noise_std * images.std() * noise
        caption = f"input (noise {self.noise_std:g} std)" if self.noise_std > 0 else "input"
        return [[(noisy[i], caption), (images[i], f"{self.stages[0]} target")] for i in range(len(images))]

    def forward(self, backbone: ConvBackbone, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, clean target) of the current stage's input."""
        index = STAGES.index(self.stage)
        with torch.no_grad():  # the frozen stages below (already in eval mode)
            x = inputs
            for below in STAGES[:index]:
                x = getattr(backbone, below)(x)
        noisy = x + self.noise_std * x.std() * torch.randn_like(x) if self.noise_std > 0 else x
        recon = self.decoders[self.stage](getattr(backbone, self.stage)(noisy))
        if recon.shape[-2:] != x.shape[-2:]:
            recon = F.interpolate(recon, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return recon, x

    def loss(self, outputs: tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        recon, clean = outputs
        return F.mse_loss(recon, clean)

    @torch.no_grad()
    def metrics(self, outputs: tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor) -> dict[str, float]:
        return {"recon_mse": float(self.loss(outputs, targets))}
