import torch
import torch.nn.functional as F

from ssl_bench.data.augment import random_crop, random_flip, to_float


def test_crop_matches_a_per_sample_reference():
    x = torch.randn(16, 3, 10, 10)
    gen = torch.Generator().manual_seed(0)
    out = random_crop(x, 2, gen)
    # replay the same offsets and crop each sample by slicing
    gen = torch.Generator().manual_seed(0)
    dy = torch.randint(0, 5, (16,), generator=gen)
    dx = torch.randint(0, 5, (16,), generator=gen)
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(16):
        ref = padded[i, :, dy[i]:dy[i] + 10, dx[i]:dx[i] + 10]
        assert torch.equal(out[i], ref)


def test_zero_padding_crop_is_identity():
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(random_crop(x, 0, torch.Generator()), x)


def test_flip_mirrors_about_half_and_keeps_the_rest():
    x = torch.randn(200, 3, 6, 6)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, xi.flip(2)) for o, xi in zip(out, x)])
    kept = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert torch.all(flipped ^ kept)
    assert 60 < int(flipped.sum()) < 140


def test_to_float_normalises():
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    mean = images.float().mean(dim=(0, 2, 3)) / 255
    std = images.float().std(dim=(0, 2, 3)) / 255
    x = to_float(images, mean, std)
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-2)
