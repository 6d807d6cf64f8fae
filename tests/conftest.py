"""Shared fixtures: Hydra-composed configs pointed at tmp paths, tiny synthetic data."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from ssl_bench.cli import CONF_DIR
from ssl_bench.data.sources import load_synthetic

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REAL_CIFAR10 = Path(os.environ.get("SSL_BENCH_CIFAR10",
                                   PROJECT_ROOT.parent / "shared" / "data" / "cifar10-jpeg"))


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose the real config with overrides; runs, cache and leaderboard go to tmp_path."""

    def _make(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("config", overrides=[
                f"paths.runs_dir={tmp_path / 'runs'}", f"paths.cache_dir={tmp_path / 'cache'}",
                "progress=false", *overrides])
        return cfg

    return _make


@pytest.fixture(scope="session")
def tiny_data():
    """400 train / 200 test synthetic images, 32 px, 10 classes."""
    return load_synthetic("synthetic", num_train=400, num_test=200, image_size=32, seed=0)


def real_cifar10_root() -> Path:
    if not REAL_CIFAR10.is_dir():
        pytest.skip(f"real CIFAR-10 not found at {REAL_CIFAR10}")
    return REAL_CIFAR10
