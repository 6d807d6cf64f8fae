"""Extra protocols on frozen features: per-stage linear probes and k-nearest neighbours.

Both read pooled features of the frozen backbone, computed once per model for the labelled
images (the largest K subset, which holds every smaller one) and the test set:

- `linear_probe_<stage>`: scikit-learn's multinomial logistic regression on standardised
  features of conv1, conv2 or conv3, fitted on the K-per-class subset. Comparing stages
  shows which layer a pretext task makes most useful (RotNet found the middle block best).
- `knn_<stage>`: k-nearest-neighbour vote (cosine distance) among the K-per-class images.
- `knn_cosine_<stage>`: the k-NN that other suites report (Wu et al. 2018's InstDisc,
  solo-learn, lightly): cosine similarity of globally pooled features, the k nearest
  (default 200) each voting exp(similarity / T) for its class (default T = 0.1).

Features are average-pooled to a `pool_grid` × `pool_grid` map and flattened, which keeps a
little spatial layout (a global pool would discard it) at a size logistic regression can fit
in seconds on a CPU. The cosine k-NN reads the globally pooled features (the representation
the other suites vote on), so its numbers can be set beside theirs at the same number of
labelled images; where K x classes <= k (K <= 20 on CIFAR-10) every labelled image votes,
weighted by its similarity.
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
COSINE_KNN_DEFAULT = (200, 0.1)  # k, temperature: what InstDisc and the suites after it report


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


def cosine_knn_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                        test_y: torch.Tensor, k: int, temperature: float, num_classes: int,
                        chunk: int = 1000) -> float:
    """Test accuracy (%) of the temperature-weighted cosine k-NN vote.

    Each test feature's `k` most similar training features (cosine) vote for their class
    with weight exp(similarity / temperature); the class with the largest sum wins (ties:
    the lower class index).
    """
    train = F.normalize(train_x.float(), dim=1)
    train_y, test_y = train_y.to(train.device), test_y.to(train.device)
    k = min(k, len(train))
    correct = 0
    for i in range(0, len(test_x), chunk):
        similarity = F.normalize(test_x[i:i + chunk].to(train.device).float(), dim=1) @ train.T
        top, index = similarity.topk(k, dim=1)
        votes = torch.zeros(len(top), num_classes, dtype=top.dtype, device=top.device)
        # exp((s - s_max) / T): the same vote up to a factor per test image, with no overflow
        votes.scatter_add_(1, train_y[index], ((top - top[:, :1]) / temperature).exp())
        correct += int((votes.argmax(1) == test_y[i:i + chunk]).sum())
    return correct / max(len(test_x), 1) * 100.0


def cosine_knn_name(cfg: DictConfig, stage: str) -> str:
    """`knn_cosine_<stage>` at the default k and temperature; other settings are other
    protocols (their rows are keyed apart): `knn_cosine_k<k>_t<T>_<stage>`."""
    settings = cfg.cosine_knn
    if int(settings.k) == COSINE_KNN_DEFAULT[0] and float(settings.temperature) == COSINE_KNN_DEFAULT[1]:
        return f"knn_cosine_{stage}"
    return f"knn_cosine_k{int(settings.k)}_t{float(settings.temperature)!r}_{stage}"


def probe_protocols(cfg: DictConfig) -> list[str]:
    """The protocol names `cfg` (the `eval.probes` node) produces, one row each per K."""
    return list(_probe_specs(cfg))


def _probe_specs(cfg: DictConfig) -> dict[str, tuple[str, str]]:
    """Protocol name -> (kind, stage) of every probe `cfg` asks for."""
    if not cfg.enabled:
        return {}
    specs = {f"linear_probe_{s}": ("linear_probe", s) for s in cfg.linear_stages}
    specs.update({f"knn_{s}": ("knn", s) for s in cfg.knn_stages})
    cosine = cfg.get("cosine_knn")
    if cosine is not None:
        specs.update({cosine_knn_name(cfg, s): ("knn_cosine", s) for s in cosine.stages})
    return specs


def run_probes(backbone: ConvBackbone, data: DataSplits, cfg: DictConfig, ks: list[int],
               seed: int, device: torch.device, chunk: int,
               skip: set[tuple[str, int]] = frozenset()) -> Iterator[dict]:
    """One result dict per (probe protocol, K) not in `skip`, as each is computed."""
    specs = _probe_specs(cfg)
    todo = [(p, k) for p in specs for k in sorted(ks) if (p, k) not in skip]
    if not todo:
        return
    for _, stage in specs.values():
        if stage not in STAGES:
            raise ValueError(f"eval.probes stages must be among {STAGES}, got {stage!r}")
    start = time.perf_counter()
    largest = balanced_subset(data.train.labels, max(ks), seed)
    features = {}  # (pool grid) -> (train, test) pooled features of the stages read at that grid
    for grid, kinds in ((cfg.pool_grid, ("linear_probe", "knn")), (1, ("knn_cosine",))):
        stages = sorted({specs[p][1] for p, _ in todo if specs[p][0] in kinds}, key=STAGES.index)
        if stages:
            features[kinds] = tuple(pooled_features(backbone, images, data.mean, data.std, stages, grid,
                                                    chunk, device)
                                    for images in (data.train.images[largest], data.test.images))
    test_y = data.test.labels.numpy()
    position = torch.full((len(data.train),), -1, dtype=torch.long)
    position[largest] = torch.arange(len(largest))
    shared = (time.perf_counter() - start) / len(todo)
    for protocol, k in todo:
        t0 = time.perf_counter()
        subset = balanced_subset(data.train.labels, k, seed)
        rows = position[subset].numpy()
        train_y = data.train.labels[subset].numpy()
        kind, stage = specs[protocol]
        train, test = next(f for kinds, f in features.items() if kind in kinds)
        if kind == "linear_probe":
            acc = linear_probe_accuracy(train[stage][rows], train_y, test[stage], test_y,
                                        cfg.logreg.C, cfg.logreg.max_iter, seed)
        elif kind == "knn":
            acc = knn_accuracy(train[stage][rows], train_y, test[stage], test_y, cfg.knn_k)
        else:
            acc = cosine_knn_accuracy(torch.from_numpy(train[stage][rows]), torch.from_numpy(train_y),
                                      torch.from_numpy(test[stage]), torch.from_numpy(test_y),
                                      int(cfg.cosine_knn.k), float(cfg.cosine_knn.temperature),
                                      data.num_classes)
        seconds = time.perf_counter() - t0 + shared
        log.info("%s K=%d: test accuracy %.2f%% (%.1fs)", protocol, k, acc, seconds)
        yield {"protocol": protocol, "labels_per_class": k, "test_acc": acc, "eval_steps": None,
               "eval_seconds": seconds}
