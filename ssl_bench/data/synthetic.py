"""A procedurally generated image set with real class structure, needing no files.

Ten classes of shapes and textures (disk, square, upward triangle, ring, cross, horizontal
stripes, vertical stripes, checkerboard, diagonal stripes, upper half-disk) with random
position, size, tilt (±20°), colours and noise, on a background that is lighter at the top.
Shapes, texture orientation and the "sky above" background give both the supervised task
and orientation-based pretext tasks (rotation) something real to learn, so tests on this
set can check that learning happens. Everything is drawn from one seeded generator.
"""

from __future__ import annotations

import math

import torch

from ssl_bench.data.imageset import ImageSet

CLASSES = ["disk", "square", "triangle", "ring", "cross",
           "h_stripes", "v_stripes", "checker", "d_stripes", "half_disk"]


def _shape_mask(cls: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Soft-free boolean mask of class `cls` in local coordinates u (right), v (down)."""
    r2 = u * u + v * v
    disk = r2 < 1.0
    if cls == 0:
        return disk
    if cls == 1:
        return torch.maximum(u.abs(), v.abs()) < 0.8
    if cls == 2:  # apex up (v = -0.85), base down (v = 0.85)
        return (v > -0.85) & (v < 0.85) & (u.abs() < (v + 0.85) * 0.55)
    if cls == 3:
        return disk & (r2 > 0.35)
    if cls == 4:
        return ((u.abs() < 0.28) & (v.abs() < 0.95)) | ((v.abs() < 0.28) & (u.abs() < 0.95))
    if cls == 5:
        return disk & (torch.sin(v * 9.0) > 0)
    if cls == 6:
        return disk & (torch.sin(u * 9.0) > 0)
    if cls == 7:
        return (torch.maximum(u.abs(), v.abs()) < 0.9) & (torch.sin(u * 7.0) * torch.sin(v * 7.0) > 0)
    if cls == 8:
        return disk & (torch.sin((u + v) * 6.5) > 0)
    if cls == 9:
        return disk & (v < 0.1)
    raise ValueError(f"synthetic data has {len(CLASSES)} classes, got class {cls}")


def make_images(n: int, image_size: int, num_classes: int, seed: int) -> ImageSet:
    """`n` images (uint8 n×3×S×S), classes balanced and shuffled, fully determined by `seed`."""
    if not 1 <= num_classes <= len(CLASSES):
        raise ValueError(f"num_classes must be in 1..{len(CLASSES)}, got {num_classes}")
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    s = image_size
    coords = torch.linspace(-1.0, 1.0, s)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # S×S, y grows downwards

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    cx, cy = (rand(n) - 0.5) * 0.6, (rand(n) - 0.5) * 0.6
    scale = 0.45 + 0.3 * rand(n)
    tilt = (rand(n) - 0.5) * (2 * math.radians(20))
    cos, sin = torch.cos(tilt)[:, None, None], torch.sin(tilt)[:, None, None]
    dx = (xx[None] - cx[:, None, None]) / scale[:, None, None]
    dy = (yy[None] - cy[:, None, None]) / scale[:, None, None]
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # n×S×S local coordinates

    mask = torch.zeros(n, s, s, dtype=torch.bool)
    for c in range(num_classes):  # one vectorised pass per class
        idx = torch.nonzero(labels == c).squeeze(1)
        mask[idx] = _shape_mask(c, u[idx], v[idx])

    sky = 0.55 + 0.45 * rand(n, 3)  # light top colour
    ground = 0.45 * rand(n, 3)  # dark bottom colour
    t = ((yy + 1) / 2)[None, None]  # 0 at top, 1 at bottom
    background = sky[:, :, None, None] * (1 - t) + ground[:, :, None, None] * t
    fg = rand(n, 3)
    # keep the shape visible: push its colour away from the background's mean brightness
    bg_mean = background.mean(dim=(1, 2, 3))
    fg = torch.where((fg.mean(1) - bg_mean).abs()[:, None] < 0.25,
                     (fg + 0.5) % 1.0, fg)
    img = torch.where(mask[:, None], fg[:, :, None, None], background)
    img = img + 0.04 * torch.randn(img.shape, generator=g)
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageSet(images, labels, CLASSES[:num_classes])
