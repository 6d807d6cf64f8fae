"""Relative patch position / context prediction (Doersch, Gupta & Efros 2015).

A centre patch and one of its 8 neighbours are cut from a 3×3 grid; a siamese trunk embeds
both and the concatenation is classified 8-way (which neighbour is it?). Shortcuts are
blocked as in the paper: a gap between patches and a random jitter of each patch (no
continuous edges or textures across the boundary), optional colour dropping (one channel
kept, the others replaced by faint noise, against chromatic aberration) and optional
per-patch normalisation.

Sizes on 32-px images with the class defaults: 8-px patches on a 3×3 grid with a 3-px gap and a jitter
of 0..2 px per patch, so 3·8 + 2·3 + 2 = 32 px are used and two neighbouring patches are
1 to 5 px apart. Patches are upsampled to `input_size` (16 px) before the backbone, for the
same reason as the jigsaw tiles: two pools would leave an 8-px patch a 2×2 map at conv3.
The CIFAR-10 config (`conf/task/relative_position.yaml`) uses 6-px patches and 2-px gaps at
a random origin instead, against the JPEG shortcut below.

JPEG shortcut: with 11 px between cells, the neighbour's cell fixes where the 8×8 JPEG
block edges fall inside it (a left neighbour starts at x = 0..2, a right one at 22..24), so
block phase alone tells much of the answer (measured: 64% held-out accuracy, 2% once the
images move by 4 px). `patch + gap = 8` (the block size) gives every cell the same phase
and `origin_shifts=8` places the layout at a random 0..7 px offset per image (jigsaw.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssl_bench.backbone import ConvBackbone
from ssl_bench.chance import chance_accuracy
from ssl_bench.errors import ConfigError
from ssl_bench.tasks.base import Panel, PretextTask
from ssl_bench.tasks.patches import (
    SiameseHead,
    check_layout,
    cut_patches,
    layout_origins,
    normalize_each,
    phase_variants,
    resize_patches,
    sample_origin,
)

# (row, column) offset of neighbour k from the centre, k = 0..7, row-major around it
OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
ARROWS = ("↖", "↑", "↗", "←", "→", "↙", "↓", "↘")


class RelativePositionTask(PretextTask):
    """Classify which of the 8 neighbours of the centre patch the second patch is."""

    def __init__(self, feature_dim: int, image_shape: tuple[int, int, int], patch: int = 8,
                 gap: int = 3, jitter: int = 2, input_size: int = 16,
                 color_dropping: bool = True, noise_scale: float = 0.01,
                 normalize_patches: bool = True, embed_dim: int = 128, hidden_dim: int = 512,
                 origin_shifts: int = 1, origin: int | None = None):
        super().__init__(feature_dim, image_shape)
        size = min(image_shape[1:])
        used = 3 * patch + 2 * gap + jitter
        if used > size or patch < 4:
            raise ConfigError(f"3 patches of {patch} px with {gap}-px gaps and {jitter} px of jitter "
                              f"need {used} px, but images are {size} px; lower task.module.patch, "
                              "gap or jitter, or raise data.image_size")
        self.patch, self.gap, self.jitter, self.input_size = patch, gap, jitter, input_size
        check_layout(used, size, origin_shifts, f"3 patches of {patch} px with {gap}-px gaps")
        self.size, self.used = size, used
        self.origin_shifts = origin_shifts
        # the layout's top-left corner: `origin` + 0..origin_shifts-1 px; None = centred
        self.origin = (size - used - origin_shifts + 1) // 2 if origin is None else origin
        check_layout(used + self.origin, size, origin_shifts, f"3 patches at origin {self.origin}")
        self.color_dropping, self.noise_scale = color_dropping, noise_scale
        self.normalize_patches = normalize_patches
        self.register_buffer("offsets", torch.tensor(OFFSETS), persistent=False)
        self.head = SiameseHead(feature_dim, 2, len(OFFSETS), embed_dim, hidden_dim)

    def sample_geometry(self, n: int, generator: torch.Generator,
                        device: torch.device) -> dict[str, torch.Tensor]:
        """Targets and the top-left corners (N×2: centre, neighbour) of each pair of patches."""
        targets = torch.randint(0, 8, (n,), generator=generator, device=device)
        cell_row = torch.stack([torch.ones_like(targets), 1 + self.offsets[targets, 0]], 1)
        cell_col = torch.stack([torch.ones_like(targets), 1 + self.offsets[targets, 1]], 1)
        stride = self.patch + self.gap
        top0, left0 = layout_origins(n, self.origin_shifts, self.origin, generator, device)
        top = top0[:, None] + cell_row * stride + torch.randint(
            0, self.jitter + 1, (n, 2), generator=generator, device=device)
        left = left0[:, None] + cell_col * stride + torch.randint(
            0, self.jitter + 1, (n, 2), generator=generator, device=device)
        return {"targets": targets, "top": top, "left": left}

    def drop_colors(self, patches: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Keep one random channel per patch; the others become noise of 1/100 its std."""
        n, p, c = patches.shape[:3]
        keep = torch.randint(0, c, (n, p), generator=generator, device=patches.device)
        kept_mask = torch.nn.functional.one_hot(keep, c).bool()[..., None, None]  # N×P×C×1×1
        kept = (patches * kept_mask).sum(2, keepdim=True)
        noise = torch.randn(patches.shape, generator=generator, device=patches.device)
        noise = noise * kept.std(dim=(-2, -1), keepdim=True) * self.noise_scale
        return torch.where(kept_mask, patches, noise)

    def make_batch(self, images: torch.Tensor, generator: torch.Generator,
                   labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """N images -> (2N patches: centre of image i at 2i, its neighbour at 2i+1; N labels)."""
        geometry = self.sample_geometry(len(images), generator, images.device)
        patches = cut_patches(images, geometry["top"], geometry["left"], self.patch)
        if self.color_dropping:
            patches = self.drop_colors(patches, generator)
        if self.normalize_patches:
            patches = normalize_each(patches)
        return resize_patches(patches, self.input_size).flatten(0, 1), geometry["targets"]

    def held_out_variants(self) -> dict[str, dict[str, int]]:
        """The held-out accuracy with the layout at each fixed origin 0..8 px (patches.phase_variants)."""
        return phase_variants(self.size, self.used)

    def forward(self, backbone: ConvBackbone, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(backbone(inputs))

    @property
    def chance_level(self) -> float:
        return chance_accuracy(len(OFFSETS))

    def examples(self, images: torch.Tensor, generator: torch.Generator) -> list[list[Panel]]:
        inputs, targets = self.make_batch(images, generator)
        pairs = inputs.view(len(images), 2, *inputs.shape[1:])
        rows = []
        for i, t in enumerate(targets.tolist()):
            rows.append([(images[i], "image"), (pairs[i, 0], "centre"),
                         (pairs[i, 1], f"{ARROWS[t]} {OFFSETS[t]} (class {t})")])
        return rows

    def per_sample_labels(self) -> RelativePositionLabels:
        return RelativePositionLabels(self)


# ---- the per-sample reference pipeline (`ssl-bench-perf` times it against make_batch)


class RelativePositionLabels:
    """The centre patch and one random neighbour of the 3×3 layout (2×C×s×s, colour-dropped
    and normalised per patch) and the neighbour's index 0..7."""

    def __init__(self, task: RelativePositionTask):
        self.patch, self.stride, self.jitter = task.patch, task.patch + task.gap, task.jitter
        self.origin, self.shifts, self.size = task.origin, task.origin_shifts, task.input_size
        self.color_dropping, self.noise_scale = task.color_dropping, task.noise_scale
        self.normalize = task.normalize_patches

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        target = int(torch.randint(len(OFFSETS), ()))
        dr, dc = OFFSETS[target]
        oy, ox = sample_origin(self.origin, self.shifts)
        dy, dx = torch.randint(0, self.jitter + 1, (2, 2)).tolist()
        corners = [(oy + r * self.stride + dy[j], ox + c * self.stride + dx[j])
                   for j, (r, c) in enumerate(((1, 1), (1 + dr, 1 + dc)))]
        patches = torch.stack([x[:, t:t + self.patch, s:s + self.patch] for t, s in corners])
        if self.color_dropping:  # keep one channel per patch, the others become faint noise
            keep = F.one_hot(torch.randint(0, x.shape[0], (2,)), x.shape[0]).bool()[:, :, None, None]
            kept = (patches * keep).sum(1, keepdim=True)
            noise = torch.randn(patches.shape) * kept.std(dim=(-2, -1), keepdim=True) * self.noise_scale
            patches = torch.where(keep, patches, noise)
        if self.normalize:
            patches = normalize_each(patches)
        patches = F.interpolate(patches, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return patches, target
