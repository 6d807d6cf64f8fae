"""Per-stage linear probes and k-NN on frozen features (ssl_bench.probes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from ssl_bench.backbone import STAGES
from ssl_bench.data.augment import to_float
from ssl_bench.data.imageset import DataSplits, ImageSet
from ssl_bench.probes import pooled_features, probe_protocols, run_probes
from ssl_bench.run import build_backbone

CPU = torch.device("cpu")
CHANNELS = {"conv1": 32, "conv2": 64, "conv3": 128}  # conf/backbone/small.yaml


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cfg(make_cfg):
    """The composed config; logistic regression capped at 100 iterations to stay fast."""
    return make_cfg("profile=smoke", "data=synthetic", "eval.probes.logreg.max_iter=100")


def gratings(n: int, seed: int, size: int = 32, classes: int = 10) -> ImageSet:
    """Class c = a sine grating at orientation c·18°: random phase, frequency, contrast,
    brightness, colour tint and pixel noise, so no single pixel or colour gives the class away."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    labels = (torch.arange(n) % classes)[torch.randperm(n, generator=g)]
    coords = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    angle = (labels.float() * math.pi / classes)[:, None, None]
    freq = (5.0 + 2.0 * rand(n))[:, None, None]
    phase = (2 * math.pi * rand(n))[:, None, None]
    wave = torch.sin(math.pi * freq * (torch.cos(angle) * xx + torch.sin(angle) * yy) + phase)
    contrast = (0.2 + 0.2 * rand(n))[:, None, None, None]
    base = (0.3 + 0.4 * rand(n, 3))[:, :, None, None]
    img = base + contrast * wave[:, None] + 0.1 * torch.randn(n, 3, size, size, generator=g)
    return ImageSet((img.clamp(0, 1) * 255).round().to(torch.uint8), labels,
                    [f"{18 * c}deg" for c in range(classes)])


@pytest.fixture(scope="module")
def grating_data() -> DataSplits:
    return DataSplits("gratings", gratings(300, 0), gratings(200, 1), source="gratings")


# ---------------------------------------------------------------- 1. pooled_features


@pytest.mark.parametrize("stages", [list(STAGES), ["conv2"], ["conv1", "conv3"], ["conv3", "conv1"]])
@pytest.mark.parametrize("grid", [1, 2, 3])
def test_pooled_features_shapes_and_values(cfg, tiny_data, stages, grid):
    backbone = build_backbone(cfg.backbone, 0)
    images = tiny_data.test.images[:23]
    out = pooled_features(backbone, images, tiny_data.mean, tiny_data.std, stages, grid,
                          chunk=10, device=CPU)
    assert list(out) == [s for s in STAGES if s in stages]  # stage order, whatever the asked order
    assert not backbone.training
    x = to_float(images, tiny_data.mean, tiny_data.std)
    for stage in stages:
        assert out[stage].shape == (23, CHANNELS[stage] * grid * grid)
        assert out[stage].dtype == np.float32
        with torch.no_grad():  # each stage's block is that stage's own pooled feature map
            ref = F.adaptive_avg_pool2d(backbone.features(x, stage), grid).flatten(1).numpy()
        np.testing.assert_allclose(out[stage], ref, rtol=1e-4, atol=1e-5)


def test_pooled_features_do_not_depend_on_the_chunk_size(cfg, tiny_data):
    backbone = build_backbone(cfg.backbone, 0)
    images = tiny_data.test.images[:30]
    a = pooled_features(backbone, images, tiny_data.mean, tiny_data.std, ["conv2"], 2, 7, CPU)
    b = pooled_features(backbone, images, tiny_data.mean, tiny_data.std, ["conv2"], 2, 1000, CPU)
    np.testing.assert_allclose(a["conv2"], b["conv2"], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- 2. accuracy


def _accuracies(backbone, data, cfg, ks, seed=0) -> dict[tuple[str, int], float]:
    return {(r["protocol"], r["labels_per_class"]): r["test_acc"]
            for r in run_probes(backbone, data, cfg.eval.probes, ks, seed, CPU, 1000)}


def test_probes_on_a_random_backbone_find_class_structure(cfg, grating_data):
    acc = _accuracies(build_backbone(cfg.backbone, 0), grating_data, cfg, [20])
    assert set(acc) == {(p, 20) for p in probe_protocols(cfg.eval.probes)}
    # Measured over backbone/subset seeds 0-3: linear probes 89-99.5%, k-NN 64-81% (seed 0:
    # >= 95.5% and 80%). 10 classes and 200 test images: chance is 10% with a binomial std of
    # 2.1%, so 80% (linear) and 40% (k-NN) are > 14 std above chance, with margin under the
    # lowest measured value.
    for (protocol, _k), value in acc.items():
        assert value > (80.0 if protocol.startswith("linear_probe") else 40.0), (protocol, value)


def test_probes_with_random_training_labels_are_near_chance(cfg, grating_data):
    """Training labels shuffled, test labels true: only a probe that reads test labels beats chance."""
    train = grating_data.train
    shuffled = train.labels[torch.randperm(len(train), generator=torch.Generator().manual_seed(1))]
    data = DataSplits("shuffled", ImageSet(train.images, shuffled, train.classes), grating_data.test,
                      source="gratings, shuffled labels")
    acc = _accuracies(build_backbone(cfg.backbone, 0), data, cfg, [20])
    # Measured 8-17% over seeds 0-3. Chance 10%, binomial std 2.1% on 200 test images: 22% is
    # ~5.7 std above chance, far below what a probe reading the test labels would reach.
    for key, value in acc.items():
        assert value < 22.0, (key, value)


# ---------------------------------------------------------------- 3. run_probes bookkeeping


def test_run_probes_yields_each_pair_once_honours_skip_and_is_deterministic(cfg, grating_data):
    protocols = probe_protocols(cfg.eval.probes)
    assert protocols == ["linear_probe_conv1", "linear_probe_conv2", "linear_probe_conv3",
                         "knn_conv2", "knn_conv3", "knn_cosine_conv2", "knn_cosine_conv3"]
    backbone = build_backbone(cfg.backbone, 0)
    probes = OmegaConf.merge(cfg.eval.probes, {"pool_grid": 1, "logreg": {"max_iter": 20}})  # fast
    results = list(run_probes(backbone, grating_data, probes, [10, 5], 0, CPU, 64))
    pairs = [(r["protocol"], r["labels_per_class"]) for r in results]
    assert pairs == [(p, k) for p in protocols for k in (5, 10)]  # one each, K ascending
    for r in results:
        assert 0.0 <= r["test_acc"] <= 100.0 and r["eval_steps"] is None and r["eval_seconds"] >= 0

    again = list(run_probes(backbone, grating_data, probes, [5, 10], 0, CPU, 64))
    assert [r["test_acc"] for r in again] == [r["test_acc"] for r in results]

    skip = {("linear_probe_conv1", 5), ("knn_conv3", 10), ("knn_conv2", 5), ("not_a_probe", 5)}
    rest = list(run_probes(backbone, grating_data, probes, [5, 10], 0, CPU, 64, skip=skip))
    by_pair = {(r["protocol"], r["labels_per_class"]): r["test_acc"] for r in rest}
    assert list(by_pair) == [p for p in pairs if p not in skip]
    assert by_pair == {p: r["test_acc"] for p, r in zip(pairs, results) if p not in skip}

    everything = set(pairs)
    assert list(run_probes(backbone, grating_data, probes, [5, 10], 0, CPU, 64,
                           skip=everything)) == []


def test_run_probes_rejects_an_unknown_stage(cfg, grating_data):
    probes = OmegaConf.merge(cfg.eval.probes, {"knn_stages": ["conv4"]})
    with pytest.raises(ValueError, match="conv4"):
        list(run_probes(build_backbone(cfg.backbone, 0), grating_data, probes, [5], 0, CPU, 64))


# ---------------------------------------------------------------- 4. probe_protocols


def test_probe_protocols_disabled_is_empty(cfg, grating_data):
    probes = OmegaConf.merge(cfg.eval.probes, {"enabled": False})
    assert probe_protocols(probes) == []
    assert list(run_probes(build_backbone(cfg.backbone, 0), grating_data, probes, [5], 0, CPU,
                           64)) == []


def test_probe_protocols_follow_the_stage_lists(cfg):
    probes = OmegaConf.merge(cfg.eval.probes, {"linear_stages": ["conv2"], "knn_stages": [],
                                               "cosine_knn": {"stages": []}})
    assert probe_protocols(probes) == ["linear_probe_conv2"]
