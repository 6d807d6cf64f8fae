"""Jigsaw, relative position and inpainting: geometry, targets, masks, losses, learnability."""

import pytest
import torch

from ssl_bench.backbone import ConvBackbone
from ssl_bench.data.augment import to_float
from ssl_bench.tasks import DataFacts
from ssl_bench.tasks.inpainting import InpaintingTask, dilate, make_masks
from ssl_bench.tasks.jigsaw import JigsawTask, hamming_permutations, min_pairwise_hamming
from ssl_bench.tasks.patches import cut_patches
from ssl_bench.tasks.relative_position import OFFSETS, RelativePositionTask
from ssl_bench.tasks.rotation import RotationTask
from ssl_bench.train import pretext_metrics

SHAPE = (3, 32, 32)


def _images(n=8, seed=0):
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


# --- jigsaw -------------------------------------------------------------------------------

def test_unshuffling_with_the_target_permutation_restores_grid_order():
    task = JigsawTask(16, SHAPE, grid=3, num_permutations=24, input_size=8, normalize_tiles=False)
    images = _images()
    inputs, targets = task.make_batch(images, torch.Generator().manual_seed(5))
    tiles = task.cut_tiles(images, torch.Generator().manual_seed(5))  # same draws, unshuffled
    shuffled = inputs.view(len(images), 9, *inputs.shape[1:])
    assert not torch.equal(shuffled, tiles)
    assert torch.equal(task.unshuffle(shuffled, targets), tiles)
    # and each tile really is the jittered cell it claims to be
    cell, tile = task.cell, task.tile
    for i in range(len(images)):
        for k in range(9):
            r, c = divmod(k, 3)
            region = images[i, :, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell]
            windows = region.unfold(1, tile, 1).unfold(2, tile, 1)  # C×a×b×t×t
            assert any(torch.equal(windows[:, y, x], tiles[i, k])
                       for y in range(windows.shape[1]) for x in range(windows.shape[2]))


@pytest.mark.parametrize("tiles,count", [(9, 24), (9, 100), (4, 24), (4, 10)])
def test_permutation_set_is_unique_and_meets_its_distance_bound(tiles, count):
    perms, bound = hamming_permutations(tiles, count, seed=0)
    assert perms.shape == (count, tiles)
    assert len({tuple(p) for p in perms.tolist()}) == count
    assert all(sorted(p) == list(range(tiles)) for p in perms.tolist())
    assert min_pairwise_hamming(perms) == bound
    if tiles == 9:
        # greedy max-min beats random draws, whose minimum distance is usually 2-4
        assert bound >= 6


def test_permutation_set_is_seeded():
    a, _ = hamming_permutations(9, 24, seed=1)
    b, _ = hamming_permutations(9, 24, seed=1)
    c, _ = hamming_permutations(9, 24, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_jigsaw_rejects_impossible_settings():
    with pytest.raises(ValueError, match="2..24"):
        JigsawTask(16, SHAPE, grid=2, num_permutations=100)
    with pytest.raises(ValueError, match="does not fit 16-px images"):
        JigsawTask(16, (3, 16, 16), grid=3, jitter=2)


def test_jigsaw_saves_its_permutations(tmp_path):
    import json

    task = JigsawTask(16, SHAPE, grid=2, num_permutations=24)
    task.on_pretrain_end(None, _images(2), tmp_path)
    saved = json.loads((tmp_path / "permutations.json").read_text())
    assert saved["permutations"] == task.permutations.tolist()
    assert "permutations" in task.state_dict()


# --- relative position --------------------------------------------------------------------

def test_relative_position_targets_match_the_sampled_coordinates():
    task = RelativePositionTask(16, SHAPE)
    geometry = task.sample_geometry(500, torch.Generator().manual_seed(0), torch.device("cpu"))
    stride = task.patch + task.gap
    d_row = (geometry["top"][:, 1] - geometry["top"][:, 0]).float() / stride
    d_col = (geometry["left"][:, 1] - geometry["left"][:, 0]).float() / stride
    for t, dr, dc in zip(geometry["targets"].tolist(), d_row.round().tolist(), d_col.round().tolist()):
        assert OFFSETS[t] == (int(dr), int(dc))
    assert set(geometry["targets"].tolist()) == set(range(8))
    # patches stay inside the image and never touch: at least 1 px apart
    assert int(geometry["top"].min()) >= 0 and int(geometry["top"].max()) + task.patch <= 32
    gap_rows = (geometry["top"][:, 1] - geometry["top"][:, 0]).abs() - task.patch
    gap_cols = (geometry["left"][:, 1] - geometry["left"][:, 0]).abs() - task.patch
    assert bool(((gap_rows >= 1) | (gap_cols >= 1)).all())


def test_relative_position_patches_are_cut_where_the_sampler_says():
    task = RelativePositionTask(16, SHAPE, color_dropping=False, normalize_patches=False,
                                input_size=8)
    images = _images(6)
    inputs, targets = task.make_batch(images, torch.Generator().manual_seed(3))
    geometry = task.sample_geometry(6, torch.Generator().manual_seed(3), torch.device("cpu"))
    assert torch.equal(targets, geometry["targets"])
    pairs = inputs.view(6, 2, 3, 8, 8)
    for i in range(6):
        for j in range(2):
            y, x = int(geometry["top"][i, j]), int(geometry["left"][i, j])
            assert torch.equal(pairs[i, j], images[i, :, y:y + 8, x:x + 8])


def test_colour_dropping_keeps_one_channel():
    task = RelativePositionTask(16, SHAPE)
    patches = cut_patches(_images(20), torch.zeros(20, 2, dtype=torch.long),
                          torch.zeros(20, 2, dtype=torch.long), 8)
    dropped = task.drop_colors(patches, torch.Generator().manual_seed(0))
    same = (dropped == patches).flatten(-2).all(-1)  # N×2×C: channel kept unchanged
    assert same.sum(-1).eq(1).all()
    faint = dropped[~same].flatten(1).std(1)
    assert float(faint.max()) < 0.05 * float(patches.flatten(-2).std(-1).mean())


# --- inpainting ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind,low,high", [("central", 0.25, 0.25), ("random_block", 0.25, 0.25),
                                           ("random_region", 0.2, 0.3)])
def test_mask_covers_the_stated_fraction(kind, low, high):
    masks = make_masks(kind, 64, 32, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    fraction = masks.mean(dim=(1, 2, 3))
    assert float(fraction.min()) >= low - 1 / 1024 and float(fraction.max()) <= high + 1 / 1024
    if kind != "central":  # random masks differ between images
        assert not torch.equal(masks[0], masks[1])


def test_masked_pixels_are_filled_with_the_mean_pixel():
    task = InpaintingTask(16, SHAPE, mask="random_region")
    images = _images()
    inputs, targets = task.make_batch(images, torch.Generator().manual_seed(0))
    mask = targets[:, -1:].bool().expand_as(images)
    assert torch.equal(targets[:, :-1], images)
    assert bool((inputs[mask] == 0).all())  # 0 = the mean pixel after normalisation
    assert torch.equal(inputs[~mask], images[~mask])


def test_loss_ignores_pixels_outside_the_overlap_band():
    task = InpaintingTask(16, SHAPE, mask="central", overlap=2)
    images = _images(4)
    _, targets = task.make_batch(images, torch.Generator())
    outputs = torch.randn_like(images)
    base = task.loss(outputs, targets)
    band = dilate(targets[:, -1:], 2).bool().expand_as(images)
    far = outputs.clone()
    far[~band] += 100.0  # change every pixel the loss should not see
    assert torch.allclose(task.loss(far, targets), base)
    near = outputs.clone()
    near[band & ~targets[:, -1:].bool().expand_as(images)] += 1.0  # the overlap band counts
    assert not torch.allclose(task.loss(near, targets), base)


def test_overlap_band_is_weighted_higher():
    task = InpaintingTask(16, SHAPE, mask="central", overlap=2, overlap_weight=10.0)
    mask = make_masks("central", 1, 32, torch.Generator(), torch.device("cpu"))
    w = task.loss_weights(mask)
    assert set(w.unique().tolist()) == {0.0, 1.0, 10.0}
    assert float((w == 10.0).sum()) == 20 * 20 - 16 * 16


def test_adversarial_term_trains_discriminator_only_on_its_own_loss():
    torch.manual_seed(0)
    net = _tiny_backbone()
    task = InpaintingTask(16, SHAPE, adversarial=True)
    inputs, targets = task.make_batch(_images(4), torch.Generator())
    loss = task.loss(task(net, inputs), targets)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in task.discriminator.parameters())
    assert net.conv1[0].weight.grad is not None


def test_inpainting_metrics_and_examples_png(tmp_path):
    task = InpaintingTask(16, SHAPE)
    task.build(_tiny_backbone(), DataFacts(SHAPE, torch.full((3,), 0.5), torch.full((3,), 0.25)))
    images = _images(3)
    _, targets = task.make_batch(images, torch.Generator())
    perfect = task.metrics(images, targets)
    assert perfect["masked_mse"] == 0.0 and perfect["psnr"] > 100
    off = task.metrics(images + 0.4, targets)  # 0.4 normalised = 0.1 in pixel units
    assert off["masked_mse"] == pytest.approx(0.01, rel=1e-4)
    assert off["psnr"] == pytest.approx(20.0, rel=1e-4)
    task.on_pretrain_end(_tiny_backbone(), images, tmp_path)
    assert (tmp_path / "inpainting_examples.png").stat().st_size > 1000


# --- every task ---------------------------------------------------------------------------

def _tiny_backbone():
    return ConvBackbone("tiny", {"channels": [16], "kernels": [3], "pool": "max"},
                        {"channels": [16], "kernels": [3], "pool": "max"},
                        {"channels": [16], "kernels": [3], "pool": None})


TASKS = {
    "rotation": lambda: RotationTask(16, SHAPE),
    "jigsaw": lambda: JigsawTask(16, SHAPE, grid=2, num_permutations=24),
    "relative_position": lambda: RelativePositionTask(16, SHAPE),
    "inpainting": lambda: InpaintingTask(16, SHAPE),
}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_loss_falls_on_a_tiny_fixed_batch(name, tiny_data):
    torch.manual_seed(0)
    net, task = _tiny_backbone(), TASKS[name]()
    x = to_float(tiny_data.train.images[:32], tiny_data.mean, tiny_data.std)
    inputs, targets = task.make_batch(x, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam([*net.parameters(), *task.parameters()], lr=3e-3)
    losses = []
    for _ in range(20):
        loss = task.loss(task(net, inputs), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.parametrize("name", sorted(TASKS))
def test_batches_are_deterministic_for_a_seed(name):
    task = TASKS[name]()
    a = task.make_batch(_images(), torch.Generator().manual_seed(9))
    b = task.make_batch(_images(), torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# --- JPEG block phase ------------------------------------------------------------------------

def _coordinate_images(n: int) -> torch.Tensor:
    """Images whose channel 0 is the row and channel 1 the column of each pixel."""
    rows = torch.arange(32.0).view(32, 1).expand(32, 32)
    return torch.stack([rows, rows.T, torch.zeros(32, 32)]).expand(n, 3, 32, 32).clone()


def _jigsaw_corners(task: JigsawTask, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    tiles = task.cut_tiles(_coordinate_images(n), torch.Generator().manual_seed(seed))
    return tiles[:, :, 0, 0, 0].long(), tiles[:, :, 1, 0, 0].long()  # N×T top, left


def _relative_position_corners(task: RelativePositionTask, n: int, seed: int = 0):
    geometry = task.sample_geometry(n, torch.Generator().manual_seed(seed), torch.device("cpu"))
    return geometry["top"], geometry["left"]


def test_jigsaw_grid_sits_at_one_random_origin_per_image():
    task = JigsawTask(16, SHAPE, cell=8, origin_shifts=8)
    top, left = _jigsaw_corners(task, 500)
    cells = torch.arange(9)
    origin_y = top - (cells // 3) * 8  # = the image's origin + the tile's jitter 0..2
    origin_x = left - (cells % 3) * 8
    assert int((origin_y.max(1).values - origin_y.min(1).values).max()) <= task.jitter
    assert set(origin_x.min(1).values.tolist()) <= set(range(0, 10))
    assert set(origin_x.min(1).values.tolist()) >= set(range(0, 8))  # every origin is drawn
    assert int((left + task.tile).max()) <= 32 and int((top + task.tile).max()) <= 32


@pytest.mark.parametrize("name", ["jigsaw", "relative_position"])
def test_block_phase_of_a_patch_does_not_depend_on_its_cell(name):
    """With the CIFAR-10 settings every cell's patches fall at each of the 8 JPEG block phases
    about equally often; at a fixed origin (the old layout) each cell has its own phases."""
    if name == "jigsaw":
        corners = lambda task: _jigsaw_corners(task, 4000)[1]  # noqa: E731  N×9 left edges
        fair, fixed = JigsawTask(16, SHAPE, cell=8, origin_shifts=8), JigsawTask(16, SHAPE)
        cell_of = torch.arange(9).expand(4000, 9) % 3
    else:
        corners = lambda task: _relative_position_corners(task, 4000)[1]  # noqa: E731  N×2
        fair = RelativePositionTask(16, SHAPE, patch=6, gap=2, origin_shifts=8)
        fixed = RelativePositionTask(16, SHAPE)
        targets = fair.sample_geometry(4000, torch.Generator().manual_seed(0), torch.device("cpu"))["targets"]
        cell_of = torch.stack([torch.ones_like(targets), 1 + torch.tensor(OFFSETS)[targets, 1]], 1)

    def phase_shares(task):
        phase = corners(task) % 8
        return torch.stack([torch.bincount(phase[cell_of == c], minlength=8).float()
                            / int((cell_of == c).sum()) for c in range(3)])  # cell column x phase

    shares = phase_shares(fair)
    assert float(shares.min()) > 0.09 and float(shares.max()) < 0.16  # uniform = 0.125
    assert float(phase_shares(fixed).min()) == 0.0  # fixed origin: some phases never occur there


@pytest.mark.parametrize("task", [JigsawTask(16, SHAPE, cell=8, origin_shifts=8),
                                  RelativePositionTask(16, SHAPE, patch=6, gap=2, origin_shifts=8)])
def test_held_out_metrics_include_every_fixed_origin(task, tiny_data):
    metrics = pretext_metrics(_tiny_backbone(), task, tiny_data, 16, torch.device("cpu"), seed=0)
    assert set(metrics) == {"accuracy", *(f"accuracy_origin{o}" for o in range(9))}
    assert task.origin_shifts == 8 and task.origin == 0  # the variants' settings were put back


def test_a_layout_that_cannot_move_is_rejected():
    with pytest.raises(ValueError, match="origin_shifts"):
        JigsawTask(16, SHAPE, cell=10, origin_shifts=8)  # 30 px + 7 > 32
    with pytest.raises(ValueError, match="origin_shifts"):
        RelativePositionTask(16, SHAPE, patch=6, gap=2, origin_shifts=8, origin=4)  # 24 + 4 + 7 > 32
