"""Data: whole image sets as uint8 tensors, labelled subsets, batched augmentation."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssl_bench.data.imageset import DataSplits, ImageSet
from ssl_bench.data.subsets import balanced_subset
from ssl_bench.errors import instantiate

__all__ = ["DataSplits", "ImageSet", "balanced_subset", "load_data"]

# keys of every data config that are applied after loading, not passed to the loader
_COMMON_KEYS = ("max_train", "max_test")


def load_data(cfg: DictConfig) -> DataSplits:
    """Build the configured data set (`cfg` is the `data` node) and apply the size limits."""
    params: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    limits = {k: params.pop(k, None) for k in _COMMON_KEYS}
    splits: DataSplits = instantiate(params)
    return splits.limited(limits["max_train"], limits["max_test"])
