"""The evaluation protocol: frozen conv1–conv2, conv3 + linear fitted on K labels per class.

For each K: a seeded class-balanced subset (the same for every method with the same seed);
conv3 re-initialised (RotNet's "+conv"; `eval.reinit_conv3=false` starts from the
pretrained conv3) plus a linear layer, trained for a step budget; top-1 accuracy on the
full test set after the last step (never the best step: the test set is not a
validation set).

**One labelled-sample budget per K, the same for every method.** The frozen evaluator and
the supervised baseline (whole network from scratch) train for the same number of steps of
`eval.batch_size` labelled images at a given K — `budget_steps`: `eval.epochs` passes over
the K-per-class subset, at least `eval.min_steps`, at most `eval.max_steps`, times
`eval.budget_scale` (the convergence check reruns cells at 2) — and see the same
augmentation (`eval.augment`: random crop with padding + flip), drawn by the same code.
Every row records the steps, the samples (steps x batch) and the augmentation.

conv1–conv2 are in eval mode with gradients off, so neither their weights nor their
BatchNorm statistics can change; by default they are recomputed on every augmented batch.
`eval.feature_cache=true` computes them once per model for the labelled images and their
mirror images instead, and draws one of the two per sample: exactly the recompute path with
`eval.augment.crop_padding=0` (tested), so a faster but flip-only protocol, which rows
record as `eval_augment=flip` and the supervised baseline does not share.

**Fine-tuning** (`eval.finetune`, rows `finetune`) is the supervised baseline's training
started from a method's weights instead of a fresh initialisation: `evaluate_scratch` with
`trainable_copy(backbone)`, so the budget, augmentation and optimiser are the baseline's
by construction.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from tqdm.auto import tqdm

from ssl_bench import distributed, logger
from ssl_bench.backbone import ConvBackbone, frozen_stages, reset_parameters
from ssl_bench.batching import index_batches, map_chunks
from ssl_bench.data.augment import augment, to_float
from ssl_bench.data.imageset import DataSplits
from ssl_bench.data.subsets import balanced_subset
from ssl_bench.device import autocast
from ssl_bench.errors import NonFiniteLossError
from ssl_bench.loop import Step, train_steps
from ssl_bench.optim import make_optimizer, make_schedule
from ssl_bench.seeds import derive

log = logging.getLogger(__name__)


class Conv3Classifier(nn.Module):
    """The trainable top of the protocol: conv3, global average pool, linear."""

    def __init__(self, conv3: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.conv3 = conv3
        self.fc = nn.Linear(feature_dim, num_classes)

    def forward(self, conv2_features: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.conv3(conv2_features), 1).flatten(1))


def num_steps(num_images: int, batch_size: int, epochs: float, min_steps: int,
              max_steps: int | None) -> int:
    """`epochs` passes over the labelled subset, clamped to [min_steps, max_steps].

    The floor gives small K enough optimiser steps to converge; the cap bounds the cost
    of large K on slow machines.
    """
    steps = math.ceil(epochs * num_images / min(batch_size, num_images))
    steps = max(steps, min_steps)
    return min(steps, max_steps) if max_steps else steps


def budget_steps(cfg: DictConfig, num_images: int) -> int:
    """The labelled-sample budget of one K, in steps: the same for every method.

    `num_steps` of the `eval` node, times `eval.budget_scale` (1 for the leaderboard, 2 for
    the convergence check).
    """
    base = num_steps(num_images, cfg.batch_size, cfg.epochs, cfg.min_steps, cfg.max_steps)
    return int(round(base * float(cfg.get("budget_scale", 1))))


def augment_name(cfg: DictConfig, cached: bool = False) -> str:
    """What a row's training batches went through, e.g. `crop4+flip` (`flip` when cached)."""
    parts = [] if cached else ([f"crop{int(cfg.augment.crop_padding)}"] if cfg.augment.crop_padding else [])
    parts += ["flip"] if cfg.augment.flip else []
    return "+".join(parts) or "none"


def budget_record(cfg: DictConfig, steps: int, num_images: int, cached: bool = False) -> dict:
    """The budget and augmentation columns of a row (a subset smaller than a batch is the
    whole batch at every step, so it sees `num_images` samples per step)."""
    return {"eval_steps": steps, "eval_samples": steps * min(int(cfg.batch_size), num_images),
            "eval_augment": augment_name(cfg, cached),
            "eval_budget_scale": float(cfg.get("budget_scale", 1))}


def make_classifier(backbone: ConvBackbone, num_classes: int, reinit_conv3: bool,
                    seed: int) -> Conv3Classifier:
    """A fresh copy of conv3 (re-initialised from `seed` unless told not to) + linear."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        conv3 = copy.deepcopy(backbone.conv3)
        if reinit_conv3:
            reset_parameters(conv3)
        for p in conv3.parameters():
            p.requires_grad_(True)
        return Conv3Classifier(conv3, backbone.out_channels("conv3"), num_classes)


@torch.no_grad()
def recalibrate_batchnorm(backbone: ConvBackbone, images: torch.Tensor, mean: torch.Tensor,
                          std: torch.Tensor, device: torch.device, max_images: int,
                          chunk: int = 500, upto: str = "conv2") -> None:
    """Re-estimate the BatchNorm statistics of the stages up to `upto` on whole images.

    Patch tasks learn conv1-conv2 statistics on upsampled, per-tile-normalised (for
    relative position, one-colour) tiles, and the protocol then applies them to whole
    colour images. This replaces them by the mean and variance (averaged over chunks) of a fixed random
    `max_images` of `images` (unlabeled, not augmented: the same for every method); the
    weights do not change.
    """
    stages = frozen_stages(backbone, upto)
    norms = [m for m in stages.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the chunks
    # stage by stage, so each BatchNorm sees inputs normalised by the layers already redone
    # a fixed random sample: image folders list their images class by class
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:max_images]
    for m in norms:
        m.train()
        for i in range(0, len(pick), chunk):
            stages(to_float(images[pick[i:i + chunk]].to(device), mean.to(device), std.to(device)))
        m.eval()
    for m in norms:
        m.momentum = 0.1
    log.info("BatchNorm statistics of %d layers up to %s re-estimated on %d unlabeled images",
             len(norms), upto, min(len(images), max_images))


def evaluate(backbone: ConvBackbone, data: DataSplits, cfg: DictConfig, seed: int,
             device: torch.device, channels_last: bool = True, progress: bool = True,
             ks: Sequence[int] | None = None,
             on_result: Callable[[dict], None] | None = None,
             precision: str = "fp32") -> list[dict]:
    """Run the protocol for each K in `ks` (default `cfg.labels_per_class`).

    Returns one result dict per K, and hands each to `on_result` as soon as it exists, so
    an interrupted evaluation keeps the K values it finished.
    """
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    backbone.to(device)
    frozen = frozen_stages(backbone, "conv2")
    mean, std = data.mean.to(device), data.std.to(device)
    ks = sorted(int(k) for k in (cfg.labels_per_class if ks is None else ks))
    if not ks:
        return []
    # subsets are nested across K for one seed, so the largest one holds every image needed
    largest = balanced_subset(data.train.labels, ks[-1], seed)

    start = time.perf_counter()
    test_features, cached = _frozen_features(frozen, data, largest, cfg, device, precision, memory_format)
    shared_seconds = time.perf_counter() - start
    position = torch.full((len(data.train),), -1, dtype=torch.long)
    position[largest] = torch.arange(len(largest))

    results = []
    for k in ks:
        k_start = time.perf_counter()
        subset = balanced_subset(data.train.labels, k, seed)
        labels = data.train.labels[subset].to(device)
        if cached is not None:
            batch_features = _cached_batches(cached, position[subset].to(device), len(largest))
        else:
            batch_features = _recomputed_batches(frozen, data.train.images[subset].to(device), mean, std,
                                                 cfg.augment, device, precision, memory_format)
        model = make_classifier(backbone, data.num_classes, cfg.reinit_conv3,
                                derive(seed, "eval_init", k)).to(device, memory_format=memory_format)
        steps = budget_steps(cfg, len(subset))
        train_start = time.perf_counter()
        final_loss = train_classifier(model, batch_features, labels, steps, cfg,
                                      derive(seed, "eval_train", k), device,
                                      desc=f"eval K={k}", progress=progress, precision=precision)
        train_seconds = time.perf_counter() - train_start  # it ends reading the loss: device done
        with autocast(device, precision):  # the test pass in the precision it trained in
            acc = accuracy(model, test_features, data.test.labels.to(device), cfg.chunk_size, model)
        seconds = time.perf_counter() - k_start + shared_seconds / len(ks)
        log.info("K=%d: test accuracy %.2f%% after %d steps (%.1fs)", k, acc, steps, seconds)
        results.append({"labels_per_class": k, "test_acc": acc,
                        **budget_record(cfg, steps, len(subset), cached is not None),
                        "eval_final_loss": final_loss, "eval_seconds": seconds,
                        "eval_train_seconds": train_seconds})
        if on_result:
            on_result(results[-1])
    return results


def _frozen_features(frozen: nn.Module, data: DataSplits, largest: torch.Tensor, cfg: DictConfig,
                     device: torch.device, precision: str, memory_format: torch.memory_format,
                     ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """conv2 features of the test set, and (with `feature_cache`) of the largest subset's
    images, straight and mirrored: computed once per backbone and seed, shared by every K."""
    mean, std = data.mean.to(device), data.std.to(device)

    @torch.no_grad()
    def conv2_of(images_u8: torch.Tensor, flip: bool = False) -> torch.Tensor:
        x = to_float(images_u8.to(device), mean, std)
        x = x.flip(3) if flip else x
        with autocast(device, precision):
            return frozen(x.contiguous(memory_format=memory_format))

    test_features = map_chunks(conv2_of, data.test.images, cfg.chunk_size)
    if not cfg.feature_cache:
        return test_features, None
    train_images = data.train.images[largest]
    return test_features, (map_chunks(conv2_of, train_images, cfg.chunk_size),
                           map_chunks(lambda b: conv2_of(b, flip=True), train_images, cfg.chunk_size))


def _cached_batches(cached: tuple[torch.Tensor, torch.Tensor], rows: torch.Tensor,
                    largest: int) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Training batches from the conv2 cache: each image straight or mirrored at random."""
    if torch.equal(rows, torch.arange(largest, device=rows.device)):
        straight, mirrored = cached  # the largest K: no second copy of the cache
    else:
        straight, mirrored = cached[0][rows], cached[1][rows]

    def batch_features(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        flip = torch.rand(len(idx), generator=gen, device=straight.device) < 0.5
        return torch.where(flip[:, None, None, None], mirrored[idx], straight[idx])
    return batch_features


def _recomputed_batches(frozen: nn.Module, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                        augment_cfg: DictConfig, device: torch.device, precision: str,
                        memory_format: torch.memory_format,
                        ) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Training batches through the frozen stages: the images (only the subset's) augmented
    like every method's, then conv1-conv2."""
    def batch_features(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            x = augment(to_float(images[idx], mean, std), augment_cfg.crop_padding, augment_cfg.flip, gen)
            with autocast(device, precision):  # the frozen stages: most of a step's cost
                return frozen(x.contiguous(memory_format=memory_format))
    return batch_features


def trainable_copy(backbone: nn.Module) -> nn.Module:
    """A copy of `backbone` with every parameter trainable (the frozen protocol turned off
    the gradients of conv1-conv2 in place), for fine-tuning from its weights."""
    copied = copy.deepcopy(backbone)
    for p in copied.parameters():
        p.requires_grad_(True)
    return copied.train()


def evaluate_scratch(build_backbone: Callable[[int], ConvBackbone], data: DataSplits,
                     cfg: DictConfig, seed: int, device: torch.device, channels_last: bool = True,
                     progress: bool = True, ks: Sequence[int] | None = None,
                     on_result: Callable[[dict], None] | None = None,
                     precision: str = "fp32", protocol: str | None = None) -> list[dict]:
    """The whole network trained on each K subset: the supervised baseline from scratch
    (`build_backbone(seed)` a fresh initialisation) or fine-tuning (`protocol="finetune"`,
    `build_backbone` a `trainable_copy` of the pretrained backbone).

    Same labelled images as every other method with this seed, same augmentation
    (`cfg.augment`, drawn by the same code) and the same budget (`budget_steps`) as the
    frozen evaluator at each K. A pretext-only stage (conv4) is dropped: the network is
    the evaluated conv1-conv3 architecture, plus a linear layer initialised from the seed.
    The test set is used only for the final accuracy. `ks` and `on_result` as in
    `evaluate`; results carry `protocol` when it is given (else the row's main protocol).
    """
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    mean, std = data.mean.to(device), data.std.to(device)
    test_images = data.test.images.to(device)
    results = []
    for k in sorted(int(k) for k in (cfg.labels_per_class if ks is None else ks)):
        k_start = time.perf_counter()
        subset = balanced_subset(data.train.labels, k, seed)
        images = data.train.images[subset].to(device)  # the only training images it can see
        labels = data.train.labels[subset].to(device)
        backbone = build_backbone(derive(seed, "eval_init", k)).drop_pretext_stage()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive(seed, "eval_init", k))
            model = nn.Sequential(backbone, nn.Linear(backbone.out_channels("conv3"), data.num_classes))
        model = model.to(device, memory_format=memory_format)

        def batch_inputs(idx: torch.Tensor, gen: torch.Generator, images=images) -> torch.Tensor:
            x = augment(to_float(images[idx], mean, std), cfg.augment.crop_padding,
                        cfg.augment.flip, gen)
            return x.contiguous(memory_format=memory_format)

        steps = budget_steps(cfg, len(subset))
        name = protocol or "supervised"
        final_loss = train_classifier(model, batch_inputs, labels, steps, cfg,
                                      derive(seed, "eval_train", k), device, desc=f"{name} K={k}",
                                      progress=progress, precision=precision, protocol=protocol)
        with autocast(device, precision):
            acc = accuracy(image_predictor(model, mean, std, memory_format), test_images,
                           data.test.labels.to(device), cfg.chunk_size, model)
        seconds = time.perf_counter() - k_start
        log.info("%s K=%d: test accuracy %.2f%% after %d steps (%.1fs)", name, k, acc, steps, seconds)
        results.append({"labels_per_class": k, "test_acc": acc, **budget_record(cfg, steps, len(subset)),
                        "eval_final_loss": final_loss, "eval_seconds": seconds,
                        **({"protocol": protocol} if protocol else {})})
        if on_result:
            on_result(results[-1])
    return results


def image_predictor(model: nn.Module, mean: torch.Tensor, std: torch.Tensor,
                    memory_format: torch.memory_format) -> Callable[[torch.Tensor], torch.Tensor]:
    """`model` applied to uint8 images (normalised on the way in)."""
    return lambda images: model(to_float(images, mean, std).contiguous(memory_format=memory_format))


def train_classifier(model: nn.Module,
                     batch_features: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
                     labels: torch.Tensor, steps: int, cfg: DictConfig, seed: int,
                     device: torch.device, desc: str, progress: bool, precision: str = "fp32",
                     protocol: str | None = None) -> float:
    """Fit `model` on features from `batch_features(indices, generator)`; returns final loss.

    Under `torchrun` each process trains on its slice of every global batch (as in
    pretraining), so every process ends with the same weights. `protocol` names the loss's
    logger tag (default: the main protocol, `cfg.protocol`).
    """
    optimizer = make_optimizer(model.parameters(), **cfg.optimizer)
    schedule = make_schedule(optimizer, cfg.schedule, total_steps=steps)
    aug_gen = torch.Generator(device=device).manual_seed(derive(seed, "augment"))
    batches = index_batches(len(labels), cfg.batch_size, seed)
    model.train()
    with distributed.synced_batchnorm(model):
        parallel = distributed.data_parallel(model, device)

        def next_batch() -> tuple[torch.Tensor, torch.Tensor, int]:
            idx = next(batches).to(device)
            return batch_features(idx, aug_gen), labels[idx], len(idx)

        def forward(inputs: torch.Tensor, targets: torch.Tensor, scale: float) -> tuple[torch.Tensor, None]:
            return F.cross_entropy(parallel(inputs), targets) * scale, None

        sink = logger.current()
        # e.g. eval/conv3_linear/K=20/loss: `desc` ends in K=<k>
        tag = f"eval/{protocol or cfg.get('protocol', 'conv3_linear')}/{desc.rsplit(' ', 1)[-1]}/loss"

        def record(step: Step) -> None:  # the loss stays a device tensor: the logger reads it later
            if sink.due(step.number):
                sink.scalar(tag, step.loss.detach(), step.number)

        with tqdm(total=steps, desc=desc, disable=not (progress and distributed.context().is_main),
                  leave=False, dynamic_ncols=True) as bar:
            # no per-step host read (diverged=None): the final loss is checked once below
            last = train_steps(forward, next_batch, optimizer, schedule, steps, device=device,
                               precision=precision, after_step=record, bar=bar)
    loss = last.loss if last is not None else torch.zeros(())
    final = float(distributed.mean_over_ranks(loss.detach().float().reshape(1)).item())
    if not math.isfinite(final):
        raise NonFiniteLossError(f"{desc}: the classifier's loss became {final}; lower "
                                 f"eval.optimizer.lr (now {cfg.optimizer.lr}) and run again")
    return final


@torch.no_grad()
def accuracy(predict: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
             labels: torch.Tensor, chunk: int, model: nn.Module) -> float:
    """Top-1 accuracy in percent of `predict` over `inputs` in chunks, `model` in eval mode."""
    model.eval()
    predictions = map_chunks(lambda f: predict(f).argmax(1), inputs, chunk)
    return (predictions == labels).float().mean().item() * 100.0
