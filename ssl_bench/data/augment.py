"""Batched augmentation and normalisation on tensors, on whatever device the batch is on.

Per-sample PIL transforms are the usual bottleneck of self-supervised pipelines on few
cores; here a whole batch is cropped with two `gather`s and flipped with one `where`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_float(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 N×C×H×W -> normalised float32 (mean/std in [0, 1] units, per channel)."""
    mean = mean.to(images.device).view(1, -1, 1, 1)
    std = std.to(images.device).view(1, -1, 1, 1)
    return (images.float().div_(255.0) - mean) / std


def _crop_at(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Per image i, the h×w window of `padded` whose top-left corner is (dy[i], dx[i])."""
    n, c, _, padded_w = padded.shape
    rows = dy[:, None] + torch.arange(h, device=padded.device)  # N×H
    cols = dx[:, None] + torch.arange(w, device=padded.device)  # N×W
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, padded_w))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` (zero = the mean pixel after normalisation), crop back to H×W."""
    if padding <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=x.device)
    return _crop_at(padded, dy, dx, h, w)


def random_translate(x: torch.Tensor, shifts: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by one of `shifts` offsets per axis (-shifts//2 .. shifts-1-shifts//2
    px, uniform), filling the uncovered border by reflection.

    With `shifts` = 8 every image's 8×8 JPEG block grid lands at a uniformly random phase, so
    patches cut at fixed positions afterwards no longer carry their position in where the
    block edges fall inside them; reflection (not zeros) leaves no flat border to find.
    """
    if shifts <= 1:
        return x
    n, _, h, w = x.shape
    low, high = shifts // 2, shifts - 1 - shifts // 2
    if max(low, high) >= min(h, w):
        raise ValueError(f"a translation of up to {max(low, high)} px needs images larger than "
                         f"that; got {h}x{w}")
    padded = F.pad(x, (low, high, low, high), mode="reflect")
    dy = torch.randint(0, shifts, (n,), generator=generator, device=x.device)
    dx = torch.randint(0, shifts, (n,), generator=generator, device=x.device)
    return _crop_at(padded, dy, dx, h, w)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def augment(x: torch.Tensor, crop_padding: int, flip: bool,
            generator: torch.Generator) -> torch.Tensor:
    """Random crop (with padding) then random horizontal flip, as configured."""
    x = random_crop(x, crop_padding, generator)
    return random_flip(x, generator) if flip else x
