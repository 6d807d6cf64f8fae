"""Seeded, class-balanced subsets of a labelled set.

The labelled subset depends only on (labels, K, seed): every method evaluated with the same
seed sees exactly the same labelled images. Each class's images are shuffled once per seed
and the first K of that shuffle are taken, so subsets for growing K are nested (the K=20
images are among the K=100 ones), which keeps comparisons across K free of resampling noise.
"""

from __future__ import annotations

import torch

from ssl_bench.errors import UserError
from ssl_bench.seeds import derive


def balanced_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of `per_class` random images of every class (sorted by class, then draw order)."""
    labels = labels.cpu()
    classes = torch.unique(labels[labels >= 0])
    counts = torch.stack([(labels == c).sum() for c in classes])
    if per_class <= 0:
        raise UserError(f"labels per class must be positive, got {per_class}; "
                        "fix eval.labels_per_class")
    smallest = int(counts.min())
    if per_class > smallest:
        raise UserError(f"{per_class} labels per class asked for, but the smallest class has "
                        f"only {smallest} images; use eval.labels_per_class values <= {smallest}")
    gen = torch.Generator().manual_seed(derive(seed, "subset"))
    picks = []
    for c in classes:  # one iteration per class, not per sample
        members = torch.nonzero(labels == c).squeeze(1)
        order = torch.randperm(len(members), generator=gen)
        picks.append(members[order[:per_class]])
    return torch.cat(picks)


def stratified_sample(labels: torch.Tensor, total: int, seed: int) -> torch.Tensor:
    """About `total` indices, spread evenly over classes (for quick, smaller runs)."""
    num_classes = int(torch.unique(labels[labels >= 0]).numel())
    per_class = max(1, total // max(num_classes, 1))
    counts = torch.bincount(labels[labels >= 0])
    per_class = min(per_class, int(counts[counts > 0].min()))
    return balanced_subset(labels, per_class, seed)
