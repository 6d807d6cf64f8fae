"""Property test: the image-folder loader on random file trees.

Whatever the tree holds (valid images of several modes and sizes, junk bytes, empty files,
empty folders), the loader either returns exactly the valid images, each with its class, or
raises a `DataError` (one of the documented messages) — never another exception.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from ssl_bench.data.folder import load_image_folder
from ssl_bench.errors import DataError

MODES = ("RGB", "L", "RGBA", "P")
DOCUMENTED = ("cannot decode image", "holds no images", "hold no readable images", "is not an image folder",
              "different class folders", "have different sizes", "no readable images")


def _image_bytes(mode: str, size: int, seed: int, fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    im = Image.fromarray(arr, "RGB").convert(mode)
    if fmt == "JPEG" and mode in ("RGBA", "P"):
        im = im.convert("RGB")
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


valid_image = st.tuples(st.just("image"), st.sampled_from(MODES), st.sampled_from([8, 12]),
                        st.sampled_from(["PNG", "JPEG"]))
bad_file = st.one_of(st.tuples(st.just("junk"), st.binary(min_size=1, max_size=64)),
                     st.tuples(st.just("empty")))
# mostly valid images, so that some trees load and some fail
file_kind = st.integers(0, 9).flatmap(lambda n: bad_file if n == 0 else valid_image)
# mostly non-empty class folders, now and then an empty one
class_files = st.integers(0, 9).flatmap(
    lambda n: st.just([]) if n == 0 else st.lists(file_kind, min_size=1, max_size=3))
class_names = st.sets(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3)


@st.composite
def tree(draw) -> dict[str, dict[str, list]]:
    """train/ and test/ with the same class folders, or (now and then) different ones."""
    train_classes = draw(class_names)
    test_classes = train_classes if draw(st.integers(0, 4)) else draw(class_names)
    return {split: {c: draw(class_files) for c in sorted(classes)}
            for split, classes in (("train", train_classes), ("test", test_classes))}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=tree(), skip_bad=st.booleans(), resize=st.booleans())
def test_loader_loads_exactly_the_valid_images_or_fails_clearly(spec, skip_bad, resize):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        valid: dict[str, list[tuple[str, tuple[int, int]]]] = {"train": [], "test": []}
        for split, classes in spec.items():
            for cls, files in classes.items():
                folder = root / split / cls
                folder.mkdir(parents=True)
                for i, kind in enumerate(files):
                    if kind[0] == "image":
                        _, mode, size, fmt = kind
                        ext = "png" if fmt == "PNG" else "jpg"
                        (folder / f"{i}.{ext}").write_bytes(_image_bytes(mode, size, i, fmt))
                        valid[split].append((cls, (size, size)))
                    elif kind[0] == "junk":
                        (folder / f"{i}.png").write_bytes(kind[1])
                    else:
                        (folder / f"{i}.jpg").write_bytes(b"")
        image_size = 10 if resize else None
        try:
            train, test = load_image_folder(root, image_size=image_size, skip_bad_files=skip_bad)
        except DataError as exc:
            assert any(fragment in str(exc) for fragment in DOCUMENTED), str(exc)
            event(f"DataError: {next(f for f in DOCUMENTED if f in str(exc))}")
            return
        event("loaded")
        for split, loaded in (("train", train), ("test", test)):
            expected = sorted(valid[split])
            names = [loaded.classes[int(c)] for c in loaded.labels]
            assert sorted(names) == sorted(c for c, _ in expected)
            assert loaded.images.dtype.is_floating_point is False and loaded.images.shape[1] == 3
            side = image_size or expected[0][1][0]
            assert tuple(loaded.images.shape[2:]) == (side, side)
        # junk could only have been accepted by skipping it
        if not skip_bad:
            assert all(kind[0] == "image" for classes in spec.values()
                       for files in classes.values() for kind in files)
