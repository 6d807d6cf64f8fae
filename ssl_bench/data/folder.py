"""Image-folder data sets (`root/{train,test}/<class>/<images>`) with a decoded-tensor cache.

Decoding 60,000 small JPEGs takes tens of seconds; the decoded uint8 tensor is cached under
`cache_dir`, keyed on every file's relative path, size and modification time (and the
resize setting), so an unchanged folder loads in about a second and any change re-reads it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from ssl_bench.data.imageset import ImageSet
from ssl_bench.errors import DataError
from ssl_bench.runlog import atomic_torch_save

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CACHE_VERSION = 1


def is_image_folder_root(root: Path) -> bool:
    """True when `root` has train/ and test/ folders that each contain class folders."""
    return all((root / split).is_dir() and any(p.is_dir() for p in (root / split).iterdir())
               for split in ("train", "test"))


Entry = tuple[str, int, int, int]  # relative path, size, mtime_ns, label


def list_split(split_dir: Path, classes: list[str] | None) -> tuple[list[str], list[Entry]]:
    """Class names and (relative path, size, mtime_ns, label) of every image file in a split."""
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if classes is None:
        classes = found
    elif sorted(classes) != found:
        missing = sorted(set(classes) - set(found))
        extra = sorted(set(found) - set(classes))
        raise DataError(f"{split_dir} has different class folders than expected: missing {missing}, "
                        f"unexpected {extra}; train/ and test/ must hold the same class folders")
    entries = []
    for label, name in enumerate(classes):
        with os.scandir(split_dir / name) as it:
            files = sorted((e for e in it if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)),
                           key=lambda e: e.name)
        if not files:
            raise DataError(f"class folder {split_dir / name} holds no images "
                            f"({', '.join(IMAGE_EXTENSIONS)}); remove it or add images")
        for e in files:
            st = e.stat()
            entries.append((f"{name}/{e.name}", st.st_size, st.st_mtime_ns, label))
    return classes, entries


def _decode(path: Path, image_size: int | None) -> torch.Tensor:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if image_size is not None and im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.BILINEAR)
            data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            return data.view(im.size[1], im.size[0], 3).permute(2, 0, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot decode image {path}: {exc}; delete or replace the file") from exc


def decode_split(split_dir: Path, entries: list[Entry], image_size: int | None,
                 skip_bad_files: bool = False, workers: int = 4) -> tuple[torch.Tensor, list[Entry]]:
    """Decode every listed file into one uint8 tensor N×3×H×W (PIL releases the GIL).

    A file that cannot be decoded is an error naming it, or, with `skip_bad_files`, left
    out with a warning that counts them. Returns the images and the entries kept.
    """
    def decode(entry: Entry) -> torch.Tensor | DataError:
        try:
            return _decode(split_dir / entry[0], image_size)
        except DataError as exc:
            if not skip_bad_files:
                raise
            return exc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = list(pool.map(decode, entries, chunksize=256))
    bad = [e[0] for e, t in zip(entries, decoded) if isinstance(t, DataError)]
    if bad:
        log.warning("skipped %d unreadable file(s) in %s (data.skip_bad_files=true): %s%s",
                    len(bad), split_dir, ", ".join(bad[:5]), " ..." if len(bad) > 5 else "")
    kept = [(e, t) for e, t in zip(entries, decoded) if isinstance(t, torch.Tensor)]
    if not kept:
        raise DataError(f"no readable images in {split_dir}")
    sizes = {tuple(t.shape) for _, t in kept}
    if len(sizes) > 1:
        raise DataError(f"images in {split_dir} have different sizes {sorted(sizes)[:4]}...; "
                        "set data.image_size to resize them to one size")
    return torch.stack([t for _, t in kept]), [e for e, _ in kept]


def load_image_folder(root: str | Path, classes: list[str] | None = None,
                      image_size: int | None = None, cache_dir: str | Path | None = None,
                      skip_bad_files: bool = False) -> tuple[ImageSet, ImageSet]:
    """Load train and test splits of an image folder, through the cache when one is given.

    `classes` fixes the class order (e.g. CIFAR-10's canonical order); by default it is
    the sorted folder names. `skip_bad_files` leaves out files that cannot be decoded
    instead of stopping at the first one.
    """
    root = Path(root)
    if not is_image_folder_root(root):
        raise DataError(f"{root} is not an image folder: expected {root}/train/<class>/ and "
                        f"{root}/test/<class>/ folders of images; point data.root at one")
    classes, train_entries = list_split(root / "train", classes)
    _, test_entries = list_split(root / "test", classes)
    key_src = repr((CACHE_VERSION, str(root.resolve()), classes, image_size, skip_bad_files,
                    train_entries, test_entries)).encode()
    key = hashlib.sha256(key_src).hexdigest()[:20]
    cache_file = Path(cache_dir) / f"imagefolder-{key}.pt" if cache_dir else None
    if cache_file is not None and cache_file.exists():
        try:
            blob = torch.load(cache_file, weights_only=True)
            log.info("loaded %s from cache %s", root, cache_file)
            return (ImageSet(blob["train_images"], blob["train_labels"], classes),
                    ImageSet(blob["test_images"], blob["test_labels"], classes))
        except Exception as exc:  # a torn or stale cache file is rebuilt, never trusted
            log.warning("ignoring unreadable cache %s (%s)", cache_file, exc)
    log.info("decoding %d + %d images from %s (cached afterwards)",
             len(train_entries), len(test_entries), root)
    splits = []
    for split, entries in (("train", train_entries), ("test", test_entries)):
        images, kept = decode_split(root / split, entries, image_size, skip_bad_files)
        labels = torch.tensor([e[3] for e in kept])
        empty = [classes[c] for c in range(len(classes)) if not (labels == c).any()]
        if empty:
            raise DataError(f"class folder(s) {empty} in {root / split} hold no readable images; "
                            "remove them or add images")
        splits.append(ImageSet(images, labels, classes))
    train, test = splits
    if cache_file is not None:
        _write_cache(cache_file, train, test)
    return train, test


def _write_cache(cache_file: Path, train: ImageSet, test: ImageSet) -> None:
    """Write to a temporary name and rename, so a killed run never leaves a torn cache.

    The temporary name is unique per writer (not just per pid, which repeats across the
    nodes of a cluster sharing the cache), so concurrent jobs decoding the same folder each
    rename a complete file of identical content.
    """
    try:
        atomic_torch_save(cache_file, {"train_images": train.images, "train_labels": train.labels,
                                       "test_images": test.images, "test_labels": test.labels})
    except OSError as exc:
        log.warning("could not write data cache %s (%s); the next run decodes again",
                    cache_file, exc)
