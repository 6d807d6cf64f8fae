"""Context encoder inpainting (Pathak et al. 2016).

The backbone (conv1–conv3) encodes an image with a region hidden; a decoder reconstructs
the pixels. Hidden pixels are filled with the data set's mean pixel (zero after
normalisation). The loss is L2 on the hidden region plus a thin band of the visible
context around it (`overlap` px), weighted `overlap_weight`× as in the paper (10×), so the
fill has to agree with its surroundings; pixels further out are ignored. An optional
adversarial term (0.999·L2 + 0.001·adversarial, a small discriminator) is off by default.

Masks (`mask`):
- `central`: a centred square of half the side, i.e. 1/4 of the area.
- `random_block`: `num_blocks` distinct cells of a 4×4 grid (each 1/16 of the image):
  exactly num_blocks/16 of the area (1/4 by default), at random places.
- `random_region`: smooth random blobs, upsampled low-resolution noise thresholded so that
  a random 20–30% of each image is hidden.

Metrics: `masked_mse` (primary; mean squared error on hidden pixels in [0, 1] pixel units,
lower is better) and `psnr` (dB, from the batch's masked MSE).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ssl_bench.backbone import ConvBackbone
from ssl_bench.errors import ConfigError
from ssl_bench.tasks.base import Panel, PretextTask

MASKS = ("central", "random_block", "random_region")


def make_masks(kind: str, n: int, size: int, generator: torch.Generator, device: torch.device,
               num_blocks: int = 4, coverage: tuple[float, float] = (0.2, 0.3)) -> torch.Tensor:
    """N×1×size×size float masks, 1 = hidden."""
    if kind == "central":
        mask = torch.zeros(n, 1, size, size, device=device)
        lo = size // 4
        mask[:, :, lo:lo + size // 2, lo:lo + size // 2] = 1.0
        return mask
    if kind == "random_block":
        scores = torch.rand(n, 16, generator=generator, device=device)
        cells = torch.zeros(n, 16, device=device)
        cells.scatter_(1, scores.topk(num_blocks, dim=1).indices, 1.0)
        return F.interpolate(cells.view(n, 1, 4, 4), size=(size, size), mode="nearest")
    if kind == "random_region":
        noise = torch.rand(n, 1, 4, 4, generator=generator, device=device)
        smooth = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)
        fraction = coverage[0] + (coverage[1] - coverage[0]) * torch.rand(
            n, generator=generator, device=device)
        flat = smooth.flatten(1)
        # hide the `fraction` of pixels with the highest noise: smooth, blob-shaped regions
        k = (fraction * flat.shape[1]).round().long().clamp(1, flat.shape[1])
        ranks = flat.argsort(dim=1, descending=True).argsort(dim=1)
        return (ranks < k[:, None]).float().view(n, 1, size, size)
    raise ConfigError(f"task.module.mask must be one of {MASKS}, got {kind!r}")


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow a binary N×1×H×W mask by `pixels` in every direction (square neighbourhood)."""
    if pixels <= 0:
        return mask
    return F.max_pool2d(mask, 2 * pixels + 1, stride=1, padding=pixels)


def conv_block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


class InpaintingTask(PretextTask):
    """Reconstruct hidden image regions from their context."""

    metric_name = "masked_mse"
    higher_is_better = False

    def __init__(self, feature_dim: int, image_shape: tuple[int, int, int], mask: str = "central",
                 num_blocks: int = 4, coverage: tuple[float, float] = (0.2, 0.3),
                 overlap: int = 2, overlap_weight: float = 10.0, decoder_channels: int = 64,
                 upsample_steps: int = 2, adversarial: bool = False,
                 adversarial_weight: float = 0.001):
        super().__init__(feature_dim, image_shape)
        if mask not in MASKS:
            raise ConfigError(f"task.module.mask must be one of {MASKS}, got {mask!r}")
        if not 0 < coverage[0] <= coverage[1] < 1:
            raise ConfigError(f"task.module.coverage must be 0 < low <= high < 1, got {coverage}")
        self.mask_kind, self.num_blocks, self.coverage = mask, num_blocks, tuple(coverage)
        self.overlap, self.overlap_weight = overlap, overlap_weight
        self.adversarial, self.adversarial_weight = adversarial, adversarial_weight
        channels, layers, width = image_shape[0], [], feature_dim
        for step in range(upsample_steps):
            out = max(decoder_channels // (2 ** step), 16)
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                       *conv_block(width, out)]
            width = out
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.decoder = nn.Sequential(*layers)
        self.discriminator = nn.Sequential(
            nn.Conv2d(channels, 32, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(32, 64, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 1)) if adversarial else None

    def make_batch(self, images: torch.Tensor, generator: torch.Generator,
                   labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """N images -> (masked images, N×(C+1)×H×W targets: the originals, then the mask)."""
        mask = make_masks(self.mask_kind, len(images), images.shape[-1], generator,
                          images.device, self.num_blocks, self.coverage)
        # normalised images have mean 0, so multiplying by (1 - mask) fills with the mean pixel
        return images * (1 - mask), torch.cat([images, mask], 1)

    def forward(self, backbone: ConvBackbone, inputs: torch.Tensor) -> torch.Tensor:
        out = self.decoder(backbone.features(inputs, "conv3"))
        if out.shape[-2:] != inputs.shape[-2:]:
            out = F.interpolate(out, size=inputs.shape[-2:], mode="bilinear", align_corners=False)
        return out

    def loss_weights(self, mask: torch.Tensor) -> torch.Tensor:
        """1 on hidden pixels, `overlap_weight` on the context band around them, 0 elsewhere."""
        band = dilate(mask, self.overlap) - mask
        return mask + self.overlap_weight * band

    def reconstruction_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        images, mask = targets[:, :-1], targets[:, -1:]
        weights = self.loss_weights(mask)
        squared = (outputs - images).pow(2).mean(1, keepdim=True)
        return (weights * squared).sum() / weights.sum().clamp_min(1.0)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        rec = self.reconstruction_loss(outputs, targets)
        if self.discriminator is None:
            return rec
        images, mask = targets[:, :-1], targets[:, -1:]
        completed = images * (1 - mask) + outputs * mask
        bce = F.binary_cross_entropy_with_logits
        # discriminator: real vs completed (generator side detached) ...
        real_logit = self.discriminator(images)
        fake_logit = self.discriminator(completed.detach())
        d_loss = bce(real_logit, torch.ones_like(real_logit)) + bce(fake_logit, torch.zeros_like(fake_logit))
        # ... generator: fool a frozen copy of D's weights, so this term never trains D
        frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        g_logit = functional_call(self.discriminator, frozen, (completed,))
        g_loss = bce(g_logit, torch.ones_like(g_logit))
        w = self.adversarial_weight
        return (1 - w) * rec + w * g_loss + d_loss

    @torch.no_grad()
    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        images, mask = targets[:, :-1], targets[:, -1:]
        std = self.pixel_std.view(1, -1, 1, 1)
        squared = ((outputs - images) * std).pow(2).mean(1, keepdim=True)  # [0, 1] pixel units
        mse = float((squared * mask).sum() / mask.sum().clamp_min(1.0))
        return {"masked_mse": mse, "psnr": 10 * math.log10(1.0 / max(mse, 1e-12))}

    def examples(self, images: torch.Tensor, generator: torch.Generator) -> list[list[Panel]]:
        inputs, targets = self.make_batch(images, generator)
        return [[(inputs[i], f"{self.mask_kind} mask"), (targets[i, :-1], "original")]
                for i in range(len(images))]

    @torch.no_grad()
    def on_pretrain_end(self, backbone: ConvBackbone, images: torch.Tensor, run_dir: Path) -> None:
        """Save `inpainting_examples.png`: masked input, reconstruction, original."""
        from ssl_bench.show import render_panels

        was_training = backbone.training
        backbone.eval()
        self.eval()
        inputs, targets = self.make_batch(images, torch.Generator(images.device).manual_seed(0))
        outputs = self(backbone, inputs)
        mask = targets[:, -1:]
        filled = inputs * (1 - mask) + outputs * mask
        rows = [[(inputs[i], "masked input"), (filled[i], "reconstruction"),
                 (targets[i, :-1], "original")] for i in range(len(images))]
        render_panels(rows, run_dir / "inpainting_examples.png", self.pixel_mean, self.pixel_std,
                      title="context encoder: masked input / reconstruction / original")
        backbone.train(was_training)
        self.train(was_training)

    def per_sample_labels(self) -> InpaintingLabels:
        return InpaintingLabels(self)


# ---- the per-sample reference pipeline (`ssl-bench-perf` times it against make_batch)


class InpaintingLabels:
    """The sample with its region hidden (mean-pixel fill) and (original, mask) as target."""

    def __init__(self, task: InpaintingTask):
        self.kind, self.num_blocks, self.coverage = task.mask_kind, task.num_blocks, task.coverage

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = make_masks(self.kind, 1, x.shape[-1], torch.default_generator, torch.device("cpu"),
                          self.num_blocks, self.coverage)[0]
        return x * (1 - mask), torch.cat([x, mask])
