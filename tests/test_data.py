import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_bench.data.folder import load_image_folder
from ssl_bench.data.sources import CIFAR10_CLASSES, load_synthetic, load_torchvision
from ssl_bench.data.synthetic import make_images
from ssl_bench.errors import DataError


def _write_tree(root: Path, classes, per_class=3, size=(8, 8), mode="RGB", ext="png"):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                channels = 3 if mode == "RGB" else 1
                arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
                Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode).save(
                    d / f"{i:03d}.{ext}")


def test_synthetic_is_deterministic_and_balanced():
    a, b = make_images(200, 32, 10, seed=5), make_images(200, 32, 10, seed=5)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.images.dtype == torch.uint8 and a.images.shape == (200, 3, 32, 32)
    assert torch.bincount(a.labels).tolist() == [20] * 10
    assert not torch.equal(make_images(200, 32, 10, seed=6).images, a.images)


def test_synthetic_classes_differ_in_mean_image():
    data = make_images(1000, 32, 10, seed=0)
    means = torch.stack([data.images[data.labels == c].float().mean(0) for c in range(10)])
    gaps = torch.cdist(means.flatten(1), means.flatten(1))
    assert gaps[~torch.eye(10, dtype=torch.bool)].min() > 1.0


def test_synthetic_splits_differ():
    splits = load_synthetic("synthetic", 100, 50)
    assert len(splits.train) == 100 and len(splits.test) == 50
    assert splits.unlabeled is splits.train.images


def test_image_folder_loads_rgb_and_grayscale(tmp_path):
    _write_tree(tmp_path / "rgb", ["b", "a"], mode="RGB")
    train, test = load_image_folder(tmp_path / "rgb")
    assert train.classes == ["a", "b"]  # sorted folder names
    assert train.images.shape == (6, 3, 8, 8) and len(test) == 6
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    _write_tree(tmp_path / "gray", ["x", "y"], mode="L", ext="jpg")
    train, _ = load_image_folder(tmp_path / "gray")
    assert train.images.shape == (6, 3, 8, 8)
    assert torch.equal(train.images[:, 0], train.images[:, 1])


def test_image_folder_pixels_match_the_file(tmp_path):
    _write_tree(tmp_path, ["a"], per_class=1, size=(5, 4))
    train, _ = load_image_folder(tmp_path)
    expected = np.asarray(Image.open(tmp_path / "train" / "a" / "000.png").convert("RGB"))
    assert torch.equal(train.images[0], torch.from_numpy(expected.copy()).permute(2, 0, 1))


def test_mixed_sizes_need_image_size(tmp_path):
    _write_tree(tmp_path, ["a"], per_class=1, size=(8, 8))
    Image.new("RGB", (12, 10)).save(tmp_path / "train" / "a" / "big.png")
    with pytest.raises(DataError, match="data.image_size"):
        load_image_folder(tmp_path)
    train, _ = load_image_folder(tmp_path, image_size=16)
    assert train.images.shape == (2, 3, 16, 16)


def test_cache_is_used_and_invalidated_by_changes(tmp_path):
    root, cache = tmp_path / "data", tmp_path / "cache"
    _write_tree(root, ["a", "b"])
    first, _ = load_image_folder(root, cache_dir=cache)
    assert len(list(cache.glob("*.pt"))) == 1
    # an unchanged folder comes from the cache: poison the cached pixels and see them back
    cache_file = next(cache.glob("*.pt"))
    blob = torch.load(cache_file, weights_only=True)
    blob["train_images"] = torch.zeros_like(blob["train_images"])
    torch.save(blob, cache_file)
    cached, _ = load_image_folder(root, cache_dir=cache)
    assert int(cached.images.sum()) == 0
    # a changed file (new size and mtime) is re-read
    target = root / "train" / "a" / "000.png"
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(target)
    os.utime(target, ns=(1, 1))
    fresh, _ = load_image_folder(root, cache_dir=cache)
    assert int(fresh.images[0].float().mean()) == 7
    assert int(fresh.images[1:].sum()) == int(first.images[1:].sum())


def test_cifar10_folder_uses_canonical_class_order(tmp_path):
    _write_tree(tmp_path, CIFAR10_CLASSES, per_class=1)
    splits = load_torchvision("cifar10", str(tmp_path), cache_dir=None)
    assert splits.train.classes == CIFAR10_CLASSES
    airplane = splits.train.images[splits.train.labels == 0][0]
    expected = np.asarray(Image.open(tmp_path / "train" / "airplane" / "000.png"))
    assert torch.equal(airplane, torch.from_numpy(expected.copy()).permute(2, 0, 1))
    assert "image folder" in splits.source


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="data.root"):
        load_torchvision("cifar10", str(tmp_path / "nowhere"))


def test_limited_split_is_balanced_and_seeded():
    splits = load_synthetic("synthetic", 500, 200)
    small = splits.limited(100, 50)
    assert torch.bincount(small.train.labels).tolist() == [10] * 10
    assert torch.bincount(small.test.labels).tolist() == [5] * 10
    assert torch.equal(small.train.images, splits.limited(100, 50).train.images)
