"""Extra protocols on frozen features: per-stage linear probes and k-nearest neighbours.

Both read pooled features of the frozen backbone, computed once per model for the labelled
images (the largest K subset, which holds every smaller one) and the test set:

- `linear_probe_<stage>`: scikit-learn's multinomial logistic regression on standardised
  features of conv1, conv2 or conv3, fitted on the K-per-class subset. Comparing stages
  shows which layer a pretext task makes most useful (RotNet found the middle block best).
- `knn_<stage>`: k-nearest-neighbour vote (cosine distance) among the K-per-class images.

Features are average-pooled to a `pool_grid` × `pool_grid` map and flattened, which keeps a
little spatial layout (a global pool would discard it) at a size logistic regression can fit
in seconds on a CPU.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from ssl_bench.backbone import STAGES, ConvBackbone
from ssl_bench.batching import map_chunks
from ssl_bench.data.augment import to_float
from ssl_bench.data.imageset import DataSplits
from ssl_bench.data.subsets import balanced_subset

log = logging.getLogger(__name__)


@torch.no_grad()
def pooled_features(backbone: ConvBackbone, images_u8: torch.Tensor, mean: torch.Tensor,
                    std: torch.Tensor, stages: list[str], grid: int, chunk: int,
                    device: torch.device) -> dict[str, np.ndarray]:
    """Per stage, N × (C·grid·grid) float32 features of uint8 images, backbone in eval mode."""
    backbone.eval()
    deepest = max(stages, key=STAGES.index)
    mean, std = mean.to(device), std.to(device)

    def run(batch: torch.Tensor) -> torch.Tensor:
        x = to_float(batch.to(device), mean, std)
        parts = []
        for stage in STAGES[:STAGES.index(deepest) + 1]:
            x = getattr(backbone, stage)(x)
            if stage in stages:
                parts.append(F.adaptive_avg_pool2d(x, grid).flatten(1))
        return torch.cat(parts, 1)

    flat = map_chunks(run, images_u8, chunk).float().cpu().numpy()
    widths = [backbone.out_channels(s) * grid * grid for s in STAGES if s in stages]
    out, start = {}, 0
    for stage, width in zip([s for s in STAGES if s in stages], widths):
        out[stage] = flat[:, start:start + width]
        start += width
    return out


def linear_probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                          test_y: np.ndarray, c: float, max_iter: int, seed: int) -> float:
    """Test accuracy (%) of logistic regression fitted on standardised training features."""
    scaler = StandardScaler().fit(train_x)
    model = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        # a capped iteration count is part of the protocol (same for every method)
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(scaler.transform(train_x), train_y)
    return float((model.predict(scaler.transform(test_x)) == test_y).mean() * 100.0)


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, k: int) -> float:
    """Test accuracy (%) of a distance-weighted k-NN vote with cosine distance."""
    model = KNeighborsClassifier(n_neighbors=min(k, len(train_x)), metric="cosine",
                                 weights="distance", algorithm="brute")
    model.fit(train_x, train_y)
    return float((model.predict(test_x) == test_y).mean() * 100.0)


def probe_protocols(cfg: DictConfig) -> list[str]:
    """The protocol names `cfg` (the `eval.probes` node) produces, one row each per K."""
    if not cfg.enabled:
        return []
    return ([f"linear_probe_{s}" for s in cfg.linear_stages]
            + [f"knn_{s}" for s in cfg.knn_stages])


def run_probes(backbone: ConvBackbone, data: DataSplits, cfg: DictConfig, ks: list[int],
               seed: int, device: torch.device, chunk: int,
               skip: set[tuple[str, int]] = frozenset()) -> Iterator[dict]:
    """One result dict per (probe protocol, K) not in `skip`, as each is computed."""
    todo = [(p, k) for p in probe_protocols(cfg) for k in sorted(ks) if (p, k) not in skip]
    if not todo:
        return
    for stage in list(cfg.linear_stages) + list(cfg.knn_stages):
        if stage not in STAGES:
            raise ValueError(f"eval.probes stages must be among {STAGES}, got {stage!r}")
    start = time.perf_counter()
    stages = sorted(set(cfg.linear_stages) | set(cfg.knn_stages), key=STAGES.index)
    largest = balanced_subset(data.train.labels, max(ks), seed)
    train = pooled_features(backbone, data.train.images[largest], data.mean, data.std, stages,
                            cfg.pool_grid, chunk, device)
    test = pooled_features(backbone, data.test.images, data.mean, data.std, stages,
                           cfg.pool_grid, chunk, device)
    test_y = data.test.labels.numpy()
    position = torch.full((len(data.train),), -1, dtype=torch.long)
    position[largest] = torch.arange(len(largest))
    shared = (time.perf_counter() - start) / len(todo)
    for protocol, k in todo:
        t0 = time.perf_counter()
        subset = balanced_subset(data.train.labels, k, seed)
        rows = position[subset].numpy()
        train_y = data.train.labels[subset].numpy()
        kind, stage = protocol.rsplit("_", 1)
        if kind == "linear_probe":
            acc = linear_probe_accuracy(train[stage][rows], train_y, test[stage], test_y,
                                        cfg.logreg.C, cfg.logreg.max_iter, seed)
        else:
            acc = knn_accuracy(train[stage][rows], train_y, test[stage], test_y, cfg.knn_k)
        seconds = time.perf_counter() - t0 + shared
        log.info("%s K=%d: test accuracy %.2f%% (%.1fs)", protocol, k, acc, seconds)
        yield {"protocol": protocol, "labels_per_class": k, "test_acc": acc, "eval_steps": None,
               "eval_seconds": seconds}
