import pytest
import torch

from ssl_bench.tasks.rotation import RotationTask


def _images(n=6, size=8):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("angles", [[0, 90, 180, 270], [0, 180], [90, 270]])
def test_rotating_back_by_label_gives_original(angles):
    task = RotationTask(feature_dim=4, image_shape=(3, 8, 8), angles=angles)
    images = _images()
    inputs, targets = task.make_batch(images, torch.Generator())
    assert inputs.shape == (len(angles) * len(images), 3, 8, 8)
    assert targets.shape == (len(inputs),)
    for j in range(len(inputs)):
        quarter_turns = angles[int(targets[j])] // 90
        restored = torch.rot90(inputs[j], -quarter_turns, dims=(1, 2))
        assert torch.equal(restored, images[j % len(images)])


def test_all_rotations_of_an_image_share_the_batch_and_labels_are_balanced():
    task = RotationTask(feature_dim=4, image_shape=(3, 8, 8))
    inputs, targets = task.make_batch(_images(5), torch.Generator())
    assert torch.bincount(targets).tolist() == [5, 5, 5, 5]
    # copies of image 0 under each rotation are distinct inputs
    copies = inputs[torch.arange(4) * 5]
    assert not torch.equal(copies[0], copies[1])


def test_bad_angles_rejected():
    with pytest.raises(ValueError, match="multiples of 90"):
        RotationTask(feature_dim=4, image_shape=(3, 8, 8), angles=[0, 45])
    with pytest.raises(ValueError, match="distinct"):
        RotationTask(feature_dim=4, image_shape=(3, 8, 8), angles=[0, 0])
