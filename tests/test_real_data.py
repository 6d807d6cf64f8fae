"""Real-data tier (`pytest -m real_data`, `make test-real`): the shared CIFAR-10 copy."""

import pandas as pd
import pytest
import torch

from ssl_bench.data.sources import CIFAR10_CLASSES, load_torchvision
from ssl_bench.run import run
from tests.conftest import PROJECT_ROOT, real_cifar10_root

pytestmark = pytest.mark.real_data
# the project's own cache: decoded once (~35 s), then loaded in about a second
REAL_CACHE = PROJECT_ROOT / ".cache" / "ssl_bench"


@pytest.fixture(scope="module")
def cifar10():
    root = real_cifar10_root()
    return load_torchvision("cifar10", str(root), cache_dir=str(REAL_CACHE))


def test_real_cifar10_folder_has_the_expected_sizes(cifar10):
    assert cifar10.train.images.shape == (50_000, 3, 32, 32)
    assert cifar10.test.images.shape == (10_000, 3, 32, 32)
    assert cifar10.train.classes == CIFAR10_CLASSES
    assert cifar10.train.class_counts().tolist() == [5000] * 10
    assert cifar10.test.class_counts().tolist() == [1000] * 10
    # real photographs: channel means near CIFAR-10's published (0.491, 0.482, 0.447)
    assert torch.allclose(cifar10.mean, torch.tensor([0.491, 0.482, 0.447]), atol=0.01)


def test_smoke_profile_on_real_cifar10(make_cfg, tmp_path):
    root = real_cifar10_root()
    cfg = make_cfg("profile=smoke", "data=cifar10", f"data.root={root}",
                   f"paths.cache_dir={REAL_CACHE}")
    run(cfg, tmp_path / "run")
    table = pd.read_csv(cfg.leaderboard.path)
    assert set(table.dataset) == {"cifar10"}
    # two K values for the main protocol and for each of the 3 linear probes and 2 + 2 k-NN
    assert table.groupby("protocol").size().to_dict() == {
        "conv3_linear": 2, "knn_conv2": 2, "knn_conv3": 2, "knn_cosine_conv2": 2, "knn_cosine_conv3": 2,
        "linear_probe_conv1": 2, "linear_probe_conv2": 2, "linear_probe_conv3": 2}


def test_transfer_from_real_cifar10_to_digits(make_cfg, tmp_path):
    root = real_cifar10_root()
    cfg = make_cfg("profile=smoke", "data=cifar10", f"data.root={root}", f"paths.cache_dir={REAL_CACHE}",
                   "data@eval.data=digits", "eval.probes.enabled=false")
    rows = run(cfg, tmp_path / "run")
    assert {(r["pretrain_dataset"], r["dataset"]) for r in rows} == {("cifar10", "digits")}
    assert all(r["test_acc"] > 10.0 for r in rows)  # 10 digit classes: above chance
