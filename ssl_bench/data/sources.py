"""Data-set loaders named by `conf/data/*.yaml` (`_target_`), each returning `DataSplits`.

A loader finds its files under `root`, decodes them once into uint8 tensors and says which
layout it used. Missing data is a `DataError` that says how to get it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ssl_bench.data.folder import is_image_folder_root, load_image_folder
from ssl_bench.data.imageset import DataSplits, ImageSet
from ssl_bench.data.synthetic import make_images
from ssl_bench.errors import DataError
from ssl_bench.seeds import derive

log = logging.getLogger(__name__)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]

# torchvision class, the folder its files unpack to, and the class names it exposes
_TORCHVISION = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
    "cifar100": ("CIFAR100", "cifar-100-python"),
    "stl10": ("STL10", "stl10_binary"),
}


def _from_numpy_hwc(data: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2).contiguous()


def _resize(images: torch.Tensor, image_size: int | None) -> torch.Tensor:
    if image_size is None or images.shape[-1] == image_size and images.shape[-2] == image_size:
        return images
    from torchvision.transforms.v2.functional import resize

    return resize(images, [image_size, image_size], antialias=True)


def _missing(name: str, root: Path) -> DataError:
    return DataError(
        f"no {name} data set found at data.root={root}. Either point data.root at an image "
        f"folder (root/train/<class>/*.jpg and root/test/<class>/*.jpg, e.g. "
        f"../shared/data/cifar10-jpeg), or at torchvision's files ({_TORCHVISION[name][1]}/), "
        f"or add data.download=true where the internet is reachable")


def load_torchvision(name: str, root: str, download: bool = False,
                     image_size: int | None = None, cache_dir: str | None = None,
                     skip_bad_files: bool = False) -> DataSplits:
    """CIFAR-10/100 or STL-10, from torchvision's files or from an image-folder copy."""
    if name not in _TORCHVISION:
        raise DataError(f"unknown torchvision data set {name!r}; choose one of {sorted(_TORCHVISION)}")
    root_path = Path(root).expanduser()
    cls_name, folder = _TORCHVISION[name]
    canonical = CIFAR10_CLASSES if name == "cifar10" else None
    if root_path.is_dir() and is_image_folder_root(root_path):
        log.info("%s: using the image-folder layout at %s", name, root_path)
        train, test = load_image_folder(root_path, canonical, image_size, cache_dir, skip_bad_files)
        return DataSplits(name, train, test, source=f"image folder {root_path}")
    if not (root_path / folder).is_dir() and not download:
        raise _missing(name, root_path)
    import torchvision.datasets as tvd

    log.info("%s: using torchvision's layout at %s", name, root_path)
    cls = getattr(tvd, cls_name)
    try:
        if name == "stl10":
            splits = {s: cls(str(root_path), split=s, download=download)
                      for s in ("train", "test", "unlabeled")}
            classes = list(splits["train"].classes)
            train, test = (ImageSet(_resize(torch.from_numpy(splits[s].data), image_size),
                                    torch.from_numpy(splits[s].labels.astype(np.int64)), classes)
                           for s in ("train", "test"))
            unlabeled = _resize(torch.from_numpy(splits["unlabeled"].data), image_size)
            return DataSplits(name, train, test, f"torchvision {root_path}", unlabeled)
        parts = {s: cls(str(root_path), train=s == "train", download=download)
                 for s in ("train", "test")}
    except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
        raise _missing(name, root_path) from exc
    classes = list(parts["train"].classes)
    train, test = (ImageSet(_resize(_from_numpy_hwc(parts[s].data), image_size),
                            torch.tensor(parts[s].targets), classes) for s in ("train", "test"))
    return DataSplits(name, train, test, source=f"torchvision {root_path}")


def load_folder(name: str, root: str, image_size: int | None = None,
                cache_dir: str | None = None, skip_bad_files: bool = False) -> DataSplits:
    """Any `root/{train,test}/<class>/` tree; classes in sorted folder-name order."""
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise DataError(f"data.root={root_path} does not exist; point it at a folder with "
                        "train/<class>/ and test/<class>/ image folders")
    train, test = load_image_folder(root_path, None, image_size, cache_dir, skip_bad_files)
    return DataSplits(name, train, test, source=f"image folder {root_path}")


def load_synthetic(name: str, num_train: int, num_test: int, image_size: int = 32,
                   num_classes: int = 10, seed: int = 0) -> DataSplits:
    """The procedurally generated set; train and test come from different seeds."""
    train = make_images(num_train, image_size, num_classes, seed)
    test = make_images(num_test, image_size, num_classes, derive(seed, "synthetic_test"))
    return DataSplits(name, train, test, source=f"synthetic (seed {seed})")


def load_digits(name: str, image_size: int = 32, test_fraction: float = 0.2,
                seed: int = 0) -> DataSplits:
    """scikit-learn's bundled handwritten digits (1,797 8×8 images, 10 classes), offline.

    Grey levels 0–16 are scaled to 0–255, upsampled to `image_size` and repeated over three
    channels, so a backbone pretrained on RGB photos can be evaluated on them (transfer).
    The train/test split is stratified: `test_fraction` of each class, drawn with `seed`.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images).float().mul(255.0 / 16.0)[:, None]
    images = torch.nn.functional.interpolate(images, size=(image_size, image_size),
                                             mode="bilinear", align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(bunch.target).long()
    gen = torch.Generator().manual_seed(seed)
    test_mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique():
        members = (labels == c).nonzero().flatten()
        pick = members[torch.randperm(len(members), generator=gen)]
        test_mask[pick[:round(test_fraction * len(members))]] = True
    classes = [str(c) for c in range(10)]
    train = ImageSet(images[~test_mask], labels[~test_mask], classes)
    test = ImageSet(images[test_mask], labels[test_mask], classes)
    return DataSplits(name, train, test, source="scikit-learn digits (bundled)")
