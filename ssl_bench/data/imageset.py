"""In-memory image sets: one uint8 tensor N×C×H×W plus int64 labels.

Keeping a whole data set as one tensor (CIFAR-10 is 184 MB) lets batches be cut by
indexing and augmented in bulk on the model's device, with no per-sample Python work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ssl_bench.errors import DataError
from ssl_bench.seeds import derive


@dataclass
class ImageSet:
    """Images (uint8, N×C×H×W) with integer labels (-1 where unknown) and class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 N×C×H×W, got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError("images and labels differ in length")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[indices], self.labels[indices], self.classes)

    def class_counts(self) -> torch.Tensor:
        """Images per class, in class order (unlabelled images, label -1, not counted)."""
        labelled = self.labels[self.labels >= 0]
        return torch.bincount(labelled, minlength=len(self.classes))


@dataclass
class DataSplits:
    """What a run needs: labelled train/test sets and the images to pretrain on.

    `unlabeled` defaults to the train images (their labels are never read during
    pretraining); STL-10 supplies its separate 100,000-image unlabelled split here.
    """

    name: str
    train: ImageSet
    test: ImageSet
    source: str
    unlabeled: torch.Tensor | None = None
    mean: torch.Tensor = field(init=False)
    std: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        if self.unlabeled is None:
            self.unlabeled = self.train.images
        if self.train.images.shape[1:] != self.test.images.shape[1:]:
            raise DataError(
                f"train images are {tuple(self.train.images.shape[1:])} but test images are "
                f"{tuple(self.test.images.shape[1:])}; set data.image_size to resize both")
        if self.train.classes != self.test.classes:
            raise DataError(f"train classes {self.train.classes} differ from test classes "
                            f"{self.test.classes}; both splits need the same class folders")
        self.mean, self.std = channel_stats(self.unlabeled)

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    def limited(self, max_train: int | None, max_test: int | None, seed: int = 0) -> DataSplits:
        """A class-balanced random part of each split (for quick profiles); same seed, same part."""
        from ssl_bench.data.subsets import stratified_sample

        if max_train is None and max_test is None:
            return self
        train, test = self.train, self.test
        if max_train is not None and max_train < len(train):
            train = train.subset(stratified_sample(train.labels, max_train, seed))
        if max_test is not None and max_test < len(test):
            test = test.subset(stratified_sample(test.labels, max_test, derive(seed, "test_subsample")))
        unlabeled = None
        if self.unlabeled is not self.train.images:
            n = self.unlabeled.shape[0] if max_train is None else min(max_train, len(self.unlabeled))
            gen = torch.Generator().manual_seed(derive(seed, "unlabeled_subsample"))
            unlabeled = self.unlabeled[torch.randperm(len(self.unlabeled), generator=gen)[:n]]
        return DataSplits(self.name, train, test, self.source + " (limited)", unlabeled)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std in [0, 1] units (chunked: no full float copy of the set)."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].float()
        total += x.sum(dim=(0, 2, 3)).double()
        total_sq += (x * x).sum(dim=(0, 2, 3)).double()
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    var = total_sq / count - mean * mean
    return (mean / 255.0).float(), (var.clamp_min(1e-12).sqrt() / 255.0).float()
