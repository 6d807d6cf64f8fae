"""The conventional per-sample pipeline that `ssl-bench-perf` measures ours against."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from ssl_bench.data.folder import is_image_folder_root
from ssl_bench.data.imageset import DataSplits
from ssl_bench.errors import UserError

# --------------------------------------------------------------------------- conventional pipeline
#
# The usual PyTorch way: a Dataset yields one PIL image, torchvision transforms augment and
# normalise it, a per-task function turns the one sample into its network inputs and
# pseudo-label, a DataLoader with worker processes collates samples into batches. Each
# pseudo-labeller below produces what the task's `forward` expects (after collating and one
# free reshape in `to_model_batch`), with the task's own settings, so the same model, head
# and loss consume both pipelines' batches. Random draws come from each worker's torch RNG
# (seeded by the DataLoader), so the two pipelines draw the same distributions but not the
# same numbers.


class ArrayImages(Dataset):
    """PIL images from a uint8 N×H×W×C array, as torchvision's CIFAR10 dataset serves them."""

    def __init__(self, images_nhwc: np.ndarray):
        self.images = images_nhwc

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])


class PretextDataset(Dataset):
    """One sample: PIL image -> per-sample transforms -> the task's inputs and pseudo-label."""

    def __init__(self, images: Dataset, transform: Callable[[Image.Image], torch.Tensor],
                 pseudo_label: Callable[[torch.Tensor], tuple[torch.Tensor, Any]]):
        self.images, self.transform, self.pseudo_label = images, transform, pseudo_label

    def __len__(self) -> int:
        return len(self.images)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        item = self.images[i]
        image = item[0] if isinstance(item, tuple) else item  # ImageFolder yields (image, class)
        return self.pseudo_label(self.transform(image))


def conventional_transform(image_size: int, crop_padding: int, flip: bool, mean: torch.Tensor,
                           std: torch.Tensor) -> transforms.Compose:
    """RandomCrop (padded with the mean pixel, as our zero-padding of normalised images
    does), RandomHorizontalFlip, ToTensor, Normalize: the same augmentation as ours.

    Not bit-exact: the mean pixel used as fill is rounded to uint8.
    """
    ops: list[Any] = []
    if crop_padding > 0:
        fill = tuple(int(round(255 * float(m))) for m in mean)
        ops.append(transforms.RandomCrop(image_size, padding=crop_padding, fill=fill))
    if flip:
        ops.append(transforms.RandomHorizontalFlip())
    ops += [transforms.ToTensor(), transforms.Normalize(mean.tolist(), std.tolist())]
    return transforms.Compose(ops)


def to_model_batch(inputs: torch.Tensor, targets: torch.Tensor,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Collated samples -> the task's batch layout: N×P×... inputs become (N·P)×... (views).

    Order differs from ours for rotation (image-major here, rotation-major there); the
    model treats every input alike, so it sees the same batch up to a permutation.
    """
    inputs = inputs.to(device, non_blocking=True)
    targets = targets.to(device, non_blocking=True)
    if inputs.ndim == 5:
        inputs = inputs.flatten(0, 1)
    if targets.ndim == 2:
        targets = targets.flatten()
    return inputs, targets


@contextlib.contextmanager
def conventional_batches(dataset: Dataset, batch_size: int, workers: int,
                         device: torch.device) -> Iterator[Callable[[], tuple[torch.Tensor, torch.Tensor]]]:
    """`next_batch()` over a shuffling DataLoader with persistent workers, endlessly;
    the workers are shut down on exit."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0,
                        pin_memory=device.type == "cuda")
    iterator = iter(loader)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal iterator
        try:
            inputs, targets = next(iterator)
        except StopIteration:  # a new epoch; persistent workers are reused
            iterator = iter(loader)
            inputs, targets = next(iterator)
        return to_model_batch(inputs, targets, device)

    try:
        yield next_batch
    finally:
        shutdown = getattr(loader._iterator, "_shutdown_workers", None)  # private, but the only
        if shutdown is not None:  # way to stop persistent workers before garbage collection
            shutdown()


def conventional_images(data: DataSplits, root: Path, source: str) -> tuple[Dataset, str]:
    """The conventional pipeline's image source and a description of it."""
    folder = root.exists() and is_image_folder_root(root)
    if source == "files" or (source == "auto" and folder):
        if not folder:
            raise UserError(f"--conventional-source files needs an image folder at {root}")
        from torchvision.datasets import ImageFolder

        folder_set = ImageFolder(str(root / "train"))
        return folder_set, f"JPEG files decoded per sample (ImageFolder {root / 'train'})"
    array = data.unlabeled.permute(0, 2, 3, 1).contiguous().numpy()
    return ArrayImages(array), f"in-memory uint8 array, PIL image per sample ({len(array)} images)"
