"""Jigsaw puzzles (Noroozi & Favaro 2016).

Each image is cut into a grid of tiles, each tile taken at a random offset ("jitter")
inside its cell so edges do not line up; the tiles are shuffled by one permutation of a
fixed set, a siamese trunk (the backbone, shared across tiles) embeds each tile, and an MLP
on the concatenated embeddings predicts which permutation was used.

Tile sizes on 32-px images with the class defaults: a 3×3 grid has 10-px cells; with 2 px of
jitter the tiles are 8 px. The backbone pools twice, so an 8-px tile would reach conv3 as a
2×2 map; tiles are therefore upsampled to `input_size` (16 px by default: conv3 sees 4×4),
the smallest size at which every stage still has spatial extent. A 2×2 grid (16-px cells,
14-px tiles) is the option that keeps more native pixels per tile. The CIFAR-10 config
(`conf/task/jigsaw.yaml`) uses 8-px cells and 6-px tiles instead, against the JPEG shortcut
below.

The permutation set (P members) is chosen greedily for maximal minimum Hamming distance,
as in the paper, from a seeded start; it is a buffer (so it is in every checkpoint) and is
written to the run folder as `permutations.json`.

JPEG shortcut: CIFAR-10 here is stored as JPEG, whose 8×8 block edges sit at fixed image
positions. With 10-px cells each tile has a block phase (where the edges fall inside it)
fixed by its cell, and a network reads the cell from it: measured, 97.9% held-out jigsaw
accuracy that falls to 0% when the images move by 4 px, and features worse than random
init. `cell=8` (the block size) gives every cell the same phase, and `origin_shifts=8`
places the whole grid at a random 0..7 px offset per image, so neither a tile's phase nor
the phase difference between two tiles depends on their cells (README: shortcuts).
"""

from __future__ import annotations

import functools
import itertools
import json
from pathlib import Path

import numpy as np
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


@functools.lru_cache(maxsize=8)
def hamming_permutations(num_tiles: int, count: int, seed: int) -> tuple[torch.Tensor, int]:
    """`count` permutations of range(num_tiles), greedily maximising the minimum pairwise
    Hamming distance; returns them (count×num_tiles) and that minimum distance.

    Each step adds the permutation whose distance to the nearest already chosen one is
    largest (ties broken by the seeded generator), so the returned distance is exactly the
    set's minimum pairwise distance.
    """
    every = torch.from_numpy(np.array(list(itertools.permutations(range(num_tiles)))))
    if not 2 <= count <= len(every):
        raise ConfigError(f"a {num_tiles}-tile puzzle has {len(every)} permutations; "
                          f"task.module.num_permutations must be in 2..{len(every)}, got {count}")
    # position-major layout: the distance to one permutation is a sum over 9 long rows
    columns = every.T.contiguous().to(torch.uint8)

    def distance_to(index: int) -> torch.Tensor:
        return (columns != columns[:, index, None]).sum(0, dtype=torch.int16)

    gen = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(len(every), (1,), generator=gen))]
    nearest = distance_to(chosen[0])  # distance of each candidate to the chosen set
    bound = num_tiles
    for _ in range(count - 1):
        best = int(nearest.max())
        ties = torch.nonzero(nearest == best).squeeze(1)
        pick = int(ties[torch.randint(len(ties), (1,), generator=gen)])
        chosen.append(pick)
        bound = min(bound, best)
        nearest = torch.minimum(nearest, distance_to(pick))
    return every[chosen].clone(), bound


def min_pairwise_hamming(perms: torch.Tensor) -> int:
    """The smallest Hamming distance between two different rows (for checks)."""
    d = (perms[:, None, :] != perms[None, :, :]).sum(-1)
    d.fill_diagonal_(perms.shape[1] + 1)
    return int(d.min())


class JigsawTask(PretextTask):
    """Predict which of `num_permutations` permutations shuffled the grid of tiles."""

    def __init__(self, feature_dim: int, image_shape: tuple[int, int, int], grid: int = 3,
                 num_permutations: int = 100, jitter: int = 2, input_size: int = 16,
                 normalize_tiles: bool = True, embed_dim: int = 128, hidden_dim: int = 512,
                 permutation_seed: int = 0, cell: int | None = None, origin_shifts: int = 1,
                 origin: int = 0):
        super().__init__(feature_dim, image_shape)
        size = min(image_shape[1:])
        self.size = size
        self.grid, self.jitter, self.input_size = grid, jitter, input_size
        self.cell = cell or size // grid
        self.tile = self.cell - jitter
        self.origin_shifts, self.origin = origin_shifts, origin
        if grid < 2 or self.tile < 4 or grid * self.cell > size:
            raise ConfigError(f"a {grid}x{grid} grid of {self.cell}-px cells with {jitter} px of jitter "
                              f"does not fit {size}-px images with tiles of at least 4 px; lower "
                              "task.module.grid, task.module.cell or task.module.jitter, or raise "
                              "data.image_size")
        check_layout(grid * self.cell + origin, size, origin_shifts, f"{grid}x{grid} cells of {self.cell} px")
        perms, distance = hamming_permutations(grid * grid, num_permutations, permutation_seed)
        self.register_buffer("permutations", perms.clone())
        self.min_hamming_distance = distance
        self.normalize_tiles = normalize_tiles
        self.head = SiameseHead(feature_dim, grid * grid, num_permutations, embed_dim, hidden_dim)

    @property
    def num_tiles(self) -> int:
        return self.grid * self.grid

    def cut_tiles(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Tiles in grid order (row-major), each jittered inside its cell: N×T×C×t×t."""
        n, dev = images.shape[0], images.device
        cells = torch.arange(self.num_tiles, device=dev)
        top0, left0 = layout_origins(n, self.origin_shifts, self.origin, generator, dev)
        top = top0[:, None] + (cells // self.grid) * self.cell + torch.randint(
            0, self.jitter + 1, (n, self.num_tiles), generator=generator, device=dev)
        left = left0[:, None] + (cells % self.grid) * self.cell + torch.randint(
            0, self.jitter + 1, (n, self.num_tiles), generator=generator, device=dev)
        return cut_patches(images, top, left, self.tile)

    def make_batch(self, images: torch.Tensor, generator: torch.Generator,
                   labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """N images -> (N·T tiles, shuffled, image i's at rows i·T..i·T+T-1; N permutation ids).

        Shuffled position j of image i holds its grid tile `permutations[target_i][j]`.
        """
        tiles = self.cut_tiles(images, generator)
        n = tiles.shape[0]
        targets = torch.randint(0, len(self.permutations), (n,), generator=generator,
                                device=images.device)
        order = self.permutations[targets]  # N×T
        shuffled = tiles.gather(1, order[:, :, None, None, None].expand_as(tiles))
        shuffled = resize_patches(shuffled, self.input_size)
        if self.normalize_tiles:
            shuffled = normalize_each(shuffled)
        return shuffled.flatten(0, 1), targets

    def unshuffle(self, shuffled: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Inverse of the shuffle: N×T×... tiles back in grid order."""
        order = self.permutations[targets]
        index = order.view(*order.shape, *([1] * (shuffled.ndim - 2))).expand_as(shuffled)
        return torch.empty_like(shuffled).scatter_(1, index, shuffled)

    def held_out_variants(self) -> dict[str, dict[str, int]]:
        """The held-out accuracy with the grid at each fixed origin 0..8 px (patches.phase_variants)."""
        return phase_variants(self.size, self.grid * self.cell)

    def forward(self, backbone: ConvBackbone, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(backbone(inputs))  # one trunk for every tile

    @property
    def chance_level(self) -> float:
        return chance_accuracy(len(self.permutations))

    def examples(self, images: torch.Tensor, generator: torch.Generator) -> list[list[Panel]]:
        inputs, targets = self.make_batch(images, generator)
        tiles = inputs.view(len(images), self.num_tiles, *inputs.shape[1:])
        rows = []
        for i in range(len(images)):
            order = self.permutations[targets[i]].tolist()
            rows.append([(images[i], f"perm #{int(targets[i])}")]
                        + [(tiles[i, j], f"tile {order[j]}") for j in range(self.num_tiles)])
        return rows

    def on_pretrain_end(self, backbone: ConvBackbone, images: torch.Tensor, run_dir: Path) -> None:
        (run_dir / "permutations.json").write_text(json.dumps({
            "grid": self.grid, "min_hamming_distance": self.min_hamming_distance,
            "permutations": self.permutations.tolist()}) + "\n")

    def per_sample_labels(self) -> JigsawLabels:
        return JigsawLabels(self)


# ---- the per-sample reference pipeline (`ssl-bench-perf` times it against make_batch)


class JigsawLabels:
    """A grid of jittered tiles, shuffled by a random member of the task's permutation set,
    resized and normalised per tile (T×C×s×s) and the permutation's index."""

    def __init__(self, task: JigsawTask):
        self.grid, self.cell, self.tile, self.jitter = task.grid, task.cell, task.tile, task.jitter
        self.size, self.normalize = task.input_size, task.normalize_tiles
        self.origin, self.shifts = task.origin, task.origin_shifts
        self.permutations = task.permutations.cpu()

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        n = self.grid * self.grid
        oy, ox = sample_origin(self.origin, self.shifts)
        dy, dx = torch.randint(0, self.jitter + 1, (2, n)).tolist()
        corners = [(oy + (k // self.grid) * self.cell + dy[k], ox + (k % self.grid) * self.cell + dx[k])
                   for k in range(n)]  # grid order, row-major
        tiles = torch.stack([x[:, t:t + self.tile, s:s + self.tile] for t, s in corners])
        target = int(torch.randint(len(self.permutations), ()))
        tiles = tiles[self.permutations[target]]  # shuffled position j holds tile perm[j]
        tiles = F.interpolate(tiles, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (normalize_each(tiles) if self.normalize else tiles), target
