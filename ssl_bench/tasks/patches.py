"""Cutting many patches out of a batch of images at once (jigsaw tiles, patch pairs).

Patch positions are given per image as top-left corners; one advanced-indexing gather
cuts them all, and one `interpolate` brings them to the backbone's input size. No Python
loop runs over images or patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.errors import ConfigError


def cut_patches(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                size: int) -> torch.Tensor:
    """Square patches of `size` px at corners (top, left), each N×P -> N×P×C×size×size."""
    n = images.shape[0]
    ar = torch.arange(size, device=images.device)
    rows = (top[..., None] + ar)[..., :, None]  # N×P×size×1
    cols = (left[..., None] + ar)[..., None, :]  # N×P×1×size
    batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    patches = images.permute(0, 2, 3, 1)[batch, rows, cols]  # N×P×size×size×C
    return patches.permute(0, 1, 4, 2, 3)


def resize_patches(patches: torch.Tensor, size: int) -> torch.Tensor:
    """N×P×C×h×w -> N×P×C×size×size (bilinear), unchanged when already that size."""
    if patches.shape[-1] == size and patches.shape[-2] == size:
        return patches
    n, p = patches.shape[:2]
    flat = F.interpolate(patches.flatten(0, 1), size=(size, size), mode="bilinear",
                         align_corners=False)
    return flat.view(n, p, *flat.shape[1:])


def normalize_each(patches: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per patch: subtract each channel's mean, divide by one std over all channels.

    Removes brightness and colour-cast shortcuts between patches. One std for all channels
    (not one per channel) keeps relative channel strengths, so a colour-dropped patch's
    faint noise channels stay faint.
    """
    centred = patches - patches.mean(dim=(-2, -1), keepdim=True)
    std = centred.flatten(-3).std(dim=-1)[..., None, None, None]
    return centred / (std + eps)


def layout_origins(n: int, shifts: int, origin: int, generator: torch.Generator,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corner (rows, columns; each N) of every image's patch layout: `origin` plus
    a uniform 0..shifts-1 px, drawn independently per image and axis."""
    if shifts <= 1:
        zero = torch.full((n,), origin, device=device, dtype=torch.long)
        return zero, zero.clone()
    top = origin + torch.randint(0, shifts, (n,), generator=generator, device=device)
    left = origin + torch.randint(0, shifts, (n,), generator=generator, device=device)
    return top, left


def check_layout(used: int, size: int, shifts: int, what: str) -> None:
    """A layout of `used` px placed at `shifts` origins must fit the image."""
    if used + shifts - 1 > size:
        raise ConfigError(f"{what} need {used} px and task.module.origin_shifts={shifts} moves "
                          f"them by up to {shifts - 1} px more, but images are {size} px; lower "
                          "origin_shifts, the patch sizes, or raise data.image_size")


def phase_variants(size: int, used: int, block: int = 8) -> dict[str, dict[str, int]]:
    """Held-out settings that place the whole layout at one fixed origin o = 0..block (each
    pass: `origin_shifts=1, origin=o`). The JPEG 8×8 luma grid puts every o mod 8 at its own
    block phase, and o and o+8 differ only in the 16×16 chroma grid (4:2:0), so accuracy
    that varies with o means the task reads where block edges fall, not the image."""
    return {f"origin{o}": {"origin_shifts": 1, "origin": o} for o in range(min(block, size - used) + 1)}


class SiameseHead(nn.Module):
    """Head over a tuple of patches embedded by one shared trunk (jigsaw, relative position).

    Each patch's pooled backbone feature goes through the same small layer; the embeddings
    are concatenated in input order and classified.
    """

    def __init__(self, feature_dim: int, parts: int, num_classes: int, embed_dim: int = 128,
                 hidden_dim: int = 512):
        super().__init__()
        self.parts = parts
        self.embed = nn.Sequential(nn.Linear(feature_dim, embed_dim), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(
            nn.Linear(parts * embed_dim, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N·parts)×D features, image i's parts consecutive -> N×num_classes logits."""
        embeddings = self.embed(features)
        return self.classifier(embeddings.view(-1, self.parts * embeddings.shape[1]))


def sample_origin(origin: int, shifts: int) -> tuple[int, int]:
    """One sample's layout corner (row, column): `origin` + 0..shifts-1 px per axis."""
    if shifts <= 1:
        return origin, origin
    oy, ox = (origin + torch.randint(0, shifts, (2,))).tolist()
    return oy, ox
