"""`ssl-bench-perf`: how fast the tensor pipeline is, measured side by side in one run.

The design bets that building whole batches with tensor ops (one uint8 tensor on the
model's device, `augment`, `task.make_batch`) beats the conventional per-sample pipeline
(PIL images, torchvision transforms, per-sample pseudo-labels, a DataLoader with workers),
and that caching frozen conv2 features makes the evaluator cheap. This tool measures those
claims on the machine it runs on, with the same model, batch size and task settings for
both pipelines, and writes one row per measurement (name, task, value, unit, goal, met) to
a CSV, plus a Markdown table:

a. `batch_build_fraction`: our batch build (index -> to_float -> augment -> make_batch, as
   `train.pretrain` does it) as a fraction of a whole training step.
b. `batchgen_*`: batch generation alone, ours vs the conventional DataLoader (images/s);
   `pretrain_*`: whole pretraining steps, ours vs conventional (images/s).
c. `eval_*`: the evaluator's conv3 + linear training on cached conv2 features vs
   recomputing conv1-conv2 every step (`eval.feature_cache=false`): steps/s and accuracy.
d. `backbone_*` / `matmul_gflops`: achieved FLOP/s of backbone training vs this machine's
   float32 matmul rate.
e. `eval_peak_*`: peak memory of the cached-feature evaluator over the whole training set,
   measured in a fresh process, and the theoretical size of the cached tensors.
f. `precision_*`: the bf16 lever. Backbone training steps (small, small2 and the
   configured backbone) and n×n matmuls in fp32 and under bf16 autocast, side by side, and
   what `precision=auto` picks on this machine.
g. `jobs_*`: the parallelism lever on a CPU. Backbone training images/s of one process
   using every core against as many single-thread processes at once (a joblib sweep with
   one job per core), summed.

Timings: warm-up calls first, then `--repeats` windows of calls (CUDA synchronised at the
window edges); a measurement is the median window's time per call.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

import ssl_bench.evaluate as evaluate_module
from ssl_bench.backbone import ConvBackbone
from ssl_bench.batching import index_batches
from ssl_bench.cli import CONF_DIR
from ssl_bench.data import load_data
from ssl_bench.data.augment import augment, to_float
from ssl_bench.data.folder import is_image_folder_root
from ssl_bench.data.imageset import DataSplits
from ssl_bench.data.subsets import balanced_subset
from ssl_bench.device import autocast, resolve_device, resolve_precision
from ssl_bench.errors import NonFiniteLossError, UserError, instantiate
from ssl_bench.evaluate import num_steps
from ssl_bench.methods import PRETEXT_TASKS
from ssl_bench.optim import make_optimizer, make_schedule
from ssl_bench.run import build_backbone
from ssl_bench.tasks.base import PretextTask
from ssl_bench.tasks.inpainting import InpaintingTask, make_masks
from ssl_bench.tasks.jigsaw import JigsawTask
from ssl_bench.tasks.patches import normalize_each
from ssl_bench.tasks.relative_position import OFFSETS, RelativePositionTask
from ssl_bench.tasks.rotation import RotationTask
from ssl_bench.train import enter_phase, to_memory_format

TASKS = PRETEXT_TASKS  # each has a per-sample reference pipeline below
# whole-step speed-up goals: the patch tasks' per-sample work (9 tiles, 2 patches) is where
# per-sample pipelines hurt most; rotation and inpainting steps are dominated by the model
PRETRAIN_GOALS = {"rotation": 1.1, "jigsaw": 3.0, "relative_position": 3.0, "inpainting": 1.1}
DEFAULT_DATA_ROOT = "../shared/data/cifar10-jpeg"
SEED = 0


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One measurement: a CSV row and a table line. `goal` is like '>= 10' or '<= 0.05'."""

    name: str
    task: str
    value: float
    unit: str
    goal: str = ""

    @property
    def met(self) -> str:
        if not self.goal:
            return ""
        op, bound = self.goal.split()
        ok = self.value >= float(bound) if op == ">=" else self.value <= float(bound)
        return "yes" if ok else "no"


class Recorder:
    """Collects rows and prints a line per measurement, so a long run shows its progress."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.start = time.perf_counter()

    def add(self, name: str, task: str, value: float, unit: str, goal: str = "") -> Row:
        row = Row(name, task, float(value), unit, goal)
        self.rows.append(row)
        met = f"  [goal {goal}: {row.met}]" if goal else ""
        self.say(f"{task:>17} {name:<36} {_fmt(row.value):>12} {unit}{met}")
        return row

    def say(self, message: str) -> None:
        print(f"[perf {time.perf_counter() - self.start:6.1f}s] {message}", flush=True)


def _fmt(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| measurement | task | value | unit | goal | met |", "|---|---|---:|---|---|---|"]
    lines += [f"| {r.name} | {r.task} | {_fmt(r.value)} | {r.unit} | {r.goal} | {r.met} |" for r in rows]
    return "\n".join(lines)


def write_outputs(rows: Sequence[Row], out: Path, header: Sequence[str], notes: Sequence[str]) -> Path:
    """The CSV at `out` and `out` with a .md suffix (environment, table, notes)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "task", "value", "unit", "goal", "met"])
        for r in rows:
            writer.writerow([r.name, r.task, repr(r.value), r.unit, r.goal, r.met])
    md = out.with_suffix(".md")
    md.write_text("# ssl_bench performance (`ssl-bench-perf`)\n\n" + "\n".join(f"- {h}" for h in header)
                  + "\n\n" + markdown_table(rows) + "\n\n## Notes\n\n"
                  + "\n".join(f"- {n}" for n in notes) + "\n")
    return md


# --------------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], calls: int, repeats: int, warmup: int, device: torch.device,
          min_window_s: float = 0.0) -> float:
    """Median seconds per call of `fn`: `warmup` calls, then `repeats` windows of calls.

    Windows rather than single calls: a prefetching DataLoader makes single-call times
    bimodal (a ready batch, or a wait), while a window's average is its throughput. A cheap
    `fn` gets more calls per window (up to 10x), so that a window lasts about `min_window_s`
    (judged from the warm-up) and timer and scheduler noise stay small against it.
    """
    sync(device)
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    sync(device)
    per_window = max(1, calls // repeats)
    if warmup and min_window_s > 0:
        per_call = (time.perf_counter() - t0) / warmup
        per_window = max(per_window, min(10 * per_window, math.ceil(min_window_s / max(per_call, 1e-6))))
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(per_window):
            fn()
        sync(device)
        times.append((time.perf_counter() - t0) / per_window)
    return statistics.median(times)


# --------------------------------------------------------------------------- config, data


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The project's composed Hydra config (`conf/config.yaml`) with `overrides`."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def data_overrides(root: Path, quick: bool, user: Sequence[str]) -> tuple[list[str], str | None]:
    """Overrides selecting the real CIFAR-10 at `root`, or the synthetic set when it is missing.

    Returns the overrides and a note when the synthetic fallback was taken.
    """
    if any(o.startswith(("data=", "data.root=")) for o in user):
        return [], None  # the user chose the data set
    if root.exists():
        return [f"data.root={root}"] + (["data.max_train=2000", "data.max_test=1000"] if quick else []), None
    note = (f"data root {root} does not exist: measured on the synthetic data set (data=synthetic), "
            "not CIFAR-10; the conventional pipeline serves it from memory")
    return ["data=synthetic"] + (["data.num_train=512", "data.num_test=256"] if quick else []), note


# --------------------------------------------------------------------------- models, steps


def make_backbone(backbone_cfg: DictConfig, device: torch.device, channels_last: bool) -> ConvBackbone:
    """The backbone as `run` builds it: seeded initialisation, on `device`, channels_last as configured."""
    backbone = build_backbone(backbone_cfg, SEED).to(device)
    return backbone.to(memory_format=torch.channels_last) if channels_last else backbone


def build_task(cfg: DictConfig, data: DataSplits, device: torch.device) -> tuple[ConvBackbone, PretextTask]:
    """Backbone and pretext task as `run` builds them."""
    backbone = make_backbone(cfg.backbone, device, cfg.channels_last)
    task: PretextTask = instantiate(cfg.task.module, feature_dim=backbone.out_channels(),
                                    image_shape=tuple(data.train.images.shape[1:]))
    return backbone, task.bind_data(data.mean, data.std, data.num_classes).to(device)


class Trainer:
    """The model side of one pretraining step, shared by both pipelines.

    Mirrors the body of `train.pretrain`'s loop after the batch exists: forward and loss
    (under the configured autocast), the finite-loss check, backward, SGD step, schedule
    step and the per-step pretext metrics. Only where the batch comes from differs.
    """

    def __init__(self, backbone: ConvBackbone, task: PretextTask, cfg: DictConfig, device: torch.device):
        self.backbone, self.task, self.device = backbone, task, device
        self.precision = cfg.precision
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        params = enter_phase(backbone, task, task.phases(backbone)[0])
        self.optimizer = make_optimizer(params, **cfg.train.optimizer)
        self.schedule = make_schedule(self.optimizer, total_steps=1_000_000, warmup_steps=0, **{
            k: v for k, v in cfg.train.schedule.items() if k != "warmup_epochs"})

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        with autocast(self.device, self.precision):
            outputs = self.task(self.backbone, to_memory_format(inputs, self.memory_format))
            loss = self.task.loss(outputs, targets)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss became {loss.item()} while timing {type(self.task).__name__}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        self.task.metrics(outputs, targets)


class OurBatches:
    """Batches as `train.pretrain` builds them: uint8 index -> to_float -> augment -> make_batch."""

    def __init__(self, images: torch.Tensor, data: DataSplits, task: PretextTask, cfg: DictConfig,
                 batch_size: int, device: torch.device):
        self.images = images
        self.mean, self.std = data.mean.to(device), data.std.to(device)
        self.task, self.augment_cfg, self.device = task, cfg.train.augment, device
        self.batches = index_batches(len(images), batch_size, SEED)
        self.gen = torch.Generator(device=device).manual_seed(SEED + 1)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = next(self.batches).to(self.device)
        x = augment(to_float(self.images[idx], self.mean, self.std), self.augment_cfg.crop_padding,
                    self.augment_cfg.flip, self.gen)
        return self.task.make_batch(x, self.gen, None)


# --------------------------------------------------------------------------- conventional pipeline
#
# The usual PyTorch way: a Dataset yields one PIL image, torchvision transforms augment and
# normalise it, a per-task function turns the one sample into its network inputs and
# pseudo-label, a DataLoader with worker processes collates samples into batches. Each
# pseudo-labeller below produces what the task's `forward` expects (after collating and one
# free reshape in `to_model_batch`), with the task's own settings, so the same model, head
# and loss consume both pipelines' batches. Random draws come from each worker's torch RNG
# (seeded by the DataLoader), so the two pipelines draw the same distributions but not the
# same numbers.


class ArrayImages(Dataset):
    """PIL images from a uint8 N×H×W×C array, as torchvision's CIFAR10 dataset serves them."""

    def __init__(self, images_nhwc: np.ndarray):
        self.images = images_nhwc

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])


class PretextDataset(Dataset):
    """One sample: PIL image -> per-sample transforms -> the task's inputs and pseudo-label."""

    def __init__(self, images: Dataset, transform: Callable[[Image.Image], torch.Tensor],
                 pseudo_label: Callable[[torch.Tensor], tuple[torch.Tensor, Any]]):
        self.images, self.transform, self.pseudo_label = images, transform, pseudo_label

    def __len__(self) -> int:
        return len(self.images)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        item = self.images[i]
        image = item[0] if isinstance(item, tuple) else item  # ImageFolder yields (image, class)
        return self.pseudo_label(self.transform(image))


def conventional_transform(image_size: int, crop_padding: int, flip: bool, mean: torch.Tensor,
                           std: torch.Tensor) -> transforms.Compose:
    """RandomCrop (padded with the mean pixel, as our zero-padding of normalised images
    does), RandomHorizontalFlip, ToTensor, Normalize: the same augmentation as ours.

    Not bit-exact: the mean pixel used as fill is rounded to uint8.
    """
    ops: list[Any] = []
    if crop_padding > 0:
        fill = tuple(int(round(255 * float(m))) for m in mean)
        ops.append(transforms.RandomCrop(image_size, padding=crop_padding, fill=fill))
    if flip:
        ops.append(transforms.RandomHorizontalFlip())
    ops += [transforms.ToTensor(), transforms.Normalize(mean.tolist(), std.tolist())]
    return transforms.Compose(ops)


class RotationLabels:
    """Every rotation of the sample (R×C×H×W) and their indices, as RotNet's loaders do."""

    def __init__(self, task: RotationTask):
        self.turns = [a // 90 for a in task.angles]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rotated = torch.stack([torch.rot90(x, k, dims=(1, 2)) for k in self.turns])
        return rotated, torch.arange(len(self.turns))


def sample_origin(origin: int, shifts: int) -> tuple[int, int]:
    """One sample's layout corner (row, column): `origin` + 0..shifts-1 px per axis."""
    if shifts <= 1:
        return origin, origin
    oy, ox = (origin + torch.randint(0, shifts, (2,))).tolist()
    return oy, ox


class JigsawLabels:
    """A grid of jittered tiles, shuffled by a random member of the task's permutation set,
    resized and normalised per tile (T×C×s×s) and the permutation's index."""

    def __init__(self, task: JigsawTask):
        self.grid, self.cell, self.tile, self.jitter = task.grid, task.cell, task.tile, task.jitter
        self.size, self.normalize = task.input_size, task.normalize_tiles
        self.origin, self.shifts = task.origin, task.origin_shifts
        self.permutations = task.permutations.cpu()

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        n = self.grid * self.grid
        oy, ox = sample_origin(self.origin, self.shifts)
        dy, dx = torch.randint(0, self.jitter + 1, (2, n)).tolist()
        corners = [(oy + (k // self.grid) * self.cell + dy[k], ox + (k % self.grid) * self.cell + dx[k])
                   for k in range(n)]  # grid order, row-major
        tiles = torch.stack([x[:, t:t + self.tile, s:s + self.tile] for t, s in corners])
        target = int(torch.randint(len(self.permutations), ()))
        tiles = tiles[self.permutations[target]]  # shuffled position j holds tile perm[j]
        tiles = F.interpolate(tiles, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (normalize_each(tiles) if self.normalize else tiles), target


class RelativePositionLabels:
    """The centre patch and one random neighbour of the 3×3 layout (2×C×s×s, colour-dropped
    and normalised per patch) and the neighbour's index 0..7."""

    def __init__(self, task: RelativePositionTask):
        self.patch, self.stride, self.jitter = task.patch, task.patch + task.gap, task.jitter
        self.origin, self.shifts, self.size = task.origin, task.origin_shifts, task.input_size
        self.color_dropping, self.noise_scale = task.color_dropping, task.noise_scale
        self.normalize = task.normalize_patches

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        target = int(torch.randint(len(OFFSETS), ()))
        dr, dc = OFFSETS[target]
        oy, ox = sample_origin(self.origin, self.shifts)
        dy, dx = torch.randint(0, self.jitter + 1, (2, 2)).tolist()
        corners = [(oy + r * self.stride + dy[j], ox + c * self.stride + dx[j])
                   for j, (r, c) in enumerate(((1, 1), (1 + dr, 1 + dc)))]
        patches = torch.stack([x[:, t:t + self.patch, s:s + self.patch] for t, s in corners])
        if self.color_dropping:  # keep one channel per patch, the others become faint noise
            keep = F.one_hot(torch.randint(0, x.shape[0], (2,)), x.shape[0]).bool()[:, :, None, None]
            kept = (patches * keep).sum(1, keepdim=True)
            noise = torch.randn(patches.shape) * kept.std(dim=(-2, -1), keepdim=True) * self.noise_scale
            patches = torch.where(keep, patches, noise)
        if self.normalize:
            patches = normalize_each(patches)
        patches = F.interpolate(patches, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return patches, target


class InpaintingLabels:
    """The sample with its region hidden (mean-pixel fill) and (original, mask) as target."""

    def __init__(self, task: InpaintingTask):
        self.kind, self.num_blocks, self.coverage = task.mask_kind, task.num_blocks, task.coverage

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = make_masks(self.kind, 1, x.shape[-1], torch.default_generator, torch.device("cpu"),
                          self.num_blocks, self.coverage)[0]
        return x * (1 - mask), torch.cat([x, mask])


PSEUDO_LABELS: dict[str, Callable[[Any], Callable[[torch.Tensor], tuple[torch.Tensor, Any]]]] = {
    "rotation": RotationLabels, "jigsaw": JigsawLabels,
    "relative_position": RelativePositionLabels, "inpainting": InpaintingLabels,
}


def to_model_batch(inputs: torch.Tensor, targets: torch.Tensor,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Collated samples -> the task's batch layout: N×P×... inputs become (N·P)×... (views).

    Order differs from ours for rotation (image-major here, rotation-major there); the
    model treats every input alike, so it sees the same batch up to a permutation.
    """
    inputs = inputs.to(device, non_blocking=True)
    targets = targets.to(device, non_blocking=True)
    if inputs.ndim == 5:
        inputs = inputs.flatten(0, 1)
    if targets.ndim == 2:
        targets = targets.flatten()
    return inputs, targets


@contextlib.contextmanager
def conventional_batches(dataset: Dataset, batch_size: int, workers: int,
                         device: torch.device) -> Iterator[Callable[[], tuple[torch.Tensor, torch.Tensor]]]:
    """`next_batch()` over a shuffling DataLoader with persistent workers, endlessly;
    the workers are shut down on exit."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0,
                        pin_memory=device.type == "cuda")
    iterator = iter(loader)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal iterator
        try:
            inputs, targets = next(iterator)
        except StopIteration:  # a new epoch; persistent workers are reused
            iterator = iter(loader)
            inputs, targets = next(iterator)
        return to_model_batch(inputs, targets, device)

    try:
        yield next_batch
    finally:
        shutdown = getattr(loader._iterator, "_shutdown_workers", None)  # private, but the only
        if shutdown is not None:  # way to stop persistent workers before garbage collection
            shutdown()


# --------------------------------------------------------------------------- measurements


@dataclass
class Sizes:
    """How much work each measurement does (full size, or tiny with --quick)."""

    batch_size: int
    steps: int  # timed steps per training-step measurement
    repeats: int  # timing windows (the median is reported)
    warmup: int
    eval_k: int
    eval_steps: int | None
    memory_k: int
    matmul_n: int
    matmul_reps: int
    min_window_s: float = 0.0  # cheap measurements get longer windows (see `timed`)


def measure_pipelines(name: str, cfg: DictConfig, data: DataSplits, images: torch.Tensor,
                      base_images: Dataset, device: torch.device, sizes: Sizes, workers: int,
                      rec: Recorder, conventional: bool = True) -> None:
    """(a) and (b) for one task: our batch build and step, the conventional loader and step
    (unless `conventional` is false)."""
    backbone, task = build_task(cfg, data, device)
    trainer = Trainer(backbone, task, cfg, device)
    ours = OurBatches(images, data, task, cfg, sizes.batch_size, device)
    n, s = sizes.batch_size, sizes.steps
    rep, warm = sizes.repeats, sizes.warmup

    window = sizes.min_window_s
    build_s = timed(ours, 4 * s, rep, warm, device, window)
    step_s = timed(lambda: trainer.step(*ours()), s, rep, warm, device, window)
    rec.add("batch_build_ms", name, build_s * 1e3, "ms")
    rec.add("train_step_ms", name, step_s * 1e3, "ms")
    rec.add("batch_build_fraction", name, build_s / step_s, "fraction of step", "<= 0.05")
    if not conventional:
        return

    aug = cfg.train.augment
    dataset = PretextDataset(base_images, conventional_transform(
        int(data.train.images.shape[-1]), int(aug.crop_padding), bool(aug.flip), data.mean, data.std),
        PSEUDO_LABELS[name](task))
    # a fresh loader per measurement (no queue filled during the previous one makes timed
    # steps free); the warm-up covers worker startup and the first round of prefetching
    loader_warm = warm + (2 * workers if warm > 1 else 0)
    with conventional_batches(dataset, n, workers, device) as next_batch:
        conv_build_s = timed(next_batch, 2 * s, rep, loader_warm, device, window)
    with conventional_batches(dataset, n, workers, device) as next_batch:
        conv_step_s = timed(lambda: trainer.step(*next_batch()), s, rep, loader_warm, device, window)
    rec.add("batchgen_ours_images_per_s", name, n / build_s, "images/s")
    rec.add("batchgen_conventional_images_per_s", name, n / conv_build_s, "images/s")
    rec.add("batchgen_speedup", name, conv_build_s / build_s, "x", ">= 10")
    rec.add("pretrain_ours_images_per_s", name, n / step_s, "images/s")
    rec.add("pretrain_conventional_images_per_s", name, n / conv_step_s, "images/s")
    rec.add("pretrain_speedup", name, conv_step_s / step_s, "x", f">= {PRETRAIN_GOALS[name]:g}")


def measure_evaluator(cfg: DictConfig, data: DataSplits, device: torch.device, sizes: Sizes,
                      rec: Recorder) -> str:
    """(c) `evaluate` with feature_cache true and false on one K and the same step budget.

    The training loop (`train_classifier`) is timed inside the real `evaluate` call; the
    whole call (test features, cache build, training, test accuracy) is timed too.
    Returns a description of the setting (K, steps).
    """
    k = min(sizes.eval_k, int(data.train.class_counts().min()))
    steps = sizes.eval_steps or num_steps(k * data.num_classes, cfg.eval.batch_size, cfg.eval.epochs,
                                          cfg.eval.min_steps, cfg.eval.max_steps)
    results = {cache: _timed_evaluate(cfg, data, device, k, steps, cache) for cache in (True, False)}
    rec.add("eval_steps_per_s_cached", "evaluator", results[True][0], "steps/s")
    rec.add("eval_steps_per_s_recompute", "evaluator", results[False][0], "steps/s")
    rec.add("eval_speedup", "evaluator", results[True][0] / results[False][0], "x", ">= 2")
    rec.add("eval_seconds_cached", "evaluator", results[True][2], "s (whole evaluate call)")
    rec.add("eval_seconds_recompute", "evaluator", results[False][2], "s (whole evaluate call)")
    rec.add("eval_test_acc_cached", "evaluator", results[True][1], "% (test top-1)")
    rec.add("eval_test_acc_recompute", "evaluator", results[False][1], "% (test top-1)")
    return (f"K={k} labels per class, {steps} steps of batch {cfg.eval.batch_size}, random-init "
            f"frozen conv1-conv2, {len(data.test)} test images")


def _timed_evaluate(cfg: DictConfig, data: DataSplits, device: torch.device, k: int, steps: int,
                    feature_cache: bool) -> tuple[float, float, float]:
    """(training steps/s, test accuracy, seconds of the whole call) of one `evaluate` call."""
    eval_cfg = OmegaConf.merge(cfg.eval, {"feature_cache": feature_cache, "min_steps": steps,
                                          "max_steps": steps})
    backbone = make_backbone(cfg.backbone, device, cfg.channels_last)
    loop_seconds: list[float] = []
    original = evaluate_module.train_classifier

    def timed_loop(*args: Any, **kwargs: Any) -> float:
        sync(device)
        t0 = time.perf_counter()
        loss = original(*args, **kwargs)
        sync(device)
        loop_seconds.append(time.perf_counter() - t0)
        return loss

    t0 = time.perf_counter()
    with mock.patch.object(evaluate_module, "train_classifier", timed_loop):
        result = evaluate_module.evaluate(backbone, data, eval_cfg, SEED, device, cfg.channels_last,
                                          progress=False, ks=[k], precision=cfg.precision)[0]
    return steps / loop_seconds[0], result["test_acc"], time.perf_counter() - t0


def measure_flops(cfg: DictConfig, data: DataSplits, device: torch.device, sizes: Sizes,
                  rec: Recorder) -> None:
    """(d) FLOP/s of backbone forward+backward vs the float32 matmul rate, both measured here.

    FLOPs are counted by `FlopCounterMode` on one step (convolutions and matmuls, forward
    and backward; BatchNorm, ReLU and pooling are not counted, as usual). The matmul rate is
    the best of a few n×n torch.mm.
    """
    n = sizes.matmul_n
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    best = math.inf
    for _ in range(sizes.matmul_reps):
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    peak = 2 * n ** 3 / best
    del a, b

    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    backbone = make_backbone(cfg.backbone, device, cfg.channels_last).train()
    x = torch.randn(sizes.batch_size, *data.train.images.shape[1:], device=device)
    x = x.contiguous(memory_format=memory_format)

    def fwd_bwd() -> None:
        backbone.zero_grad(set_to_none=True)
        with autocast(device, cfg.precision):
            loss = backbone(x).square().mean()
        loss.backward()

    with FlopCounterMode(display=False) as counter:
        fwd_bwd()
    flops = counter.get_total_flops()
    seconds = timed(fwd_bwd, sizes.steps, sizes.repeats, sizes.warmup, device, sizes.min_window_s)
    achieved = flops / seconds
    rec.add("matmul_gflops", "machine", peak / 1e9, f"GFLOP/s (fp32 mm {n}x{n}, best of {sizes.matmul_reps})")
    rec.add("backbone_gflop_per_step", "backbone", flops / 1e9, "GFLOP (fwd+bwd)")
    rec.add("backbone_train_gflops", "backbone", achieved / 1e9, "GFLOP/s")
    rec.add("backbone_flop_utilisation", "backbone", achieved / peak, "fraction of matmul rate",
            ">= 0.5" if device.type == "cpu" else "")


def _rss_now() -> float | None:
    """This process's resident memory now (bytes), where /proc says it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) * 1024
    return None


def _max_rss() -> float:
    """The resident-memory high-water mark (bytes) from getrusage."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(rss if sys.platform == "darwin" else rss * 1024)


def _reset_max_rss() -> bool:
    """Restart the high-water mark from the current RSS (Linux >= 4.0); False where impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _memory_child(data_cfg: dict, backbone_cfg: dict, eval_cfg: dict, device_name: str, k: int,
                  channels_last: bool) -> dict[str, float]:
    """In a fresh process: load the data, then the evaluator's setup at K (conv2 features of
    the test set and of every labelled image and its mirror image, cached), one training
    step and the test accuracy.

    Returns (bytes) the resident memory before the evaluator and its high-water mark while
    the evaluator ran (reset first, so loading's transients do not count, where Linux allows
    it), CUDA's peak allocation when on a GPU, and the theoretical size of the train cache.
    """
    device = torch.device(device_name)
    data = load_data(OmegaConf.create(data_cfg))
    k = min(k, int(data.train.class_counts().min()))
    backbone = make_backbone(OmegaConf.create(backbone_cfg), device, channels_last)
    with torch.no_grad():
        c, h, w = backbone.features(torch.zeros(1, *data.train.images.shape[1:], device=device),
                                    "conv2").shape[1:]
    before = _rss_now() or _max_rss()
    reset = _reset_max_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cfg = OmegaConf.merge(OmegaConf.create(eval_cfg), {"feature_cache": True, "min_steps": 1, "max_steps": 1})
    evaluate_module.evaluate(backbone, data, cfg, SEED, device, channels_last, progress=False, ks=[k])
    images = len(balanced_subset(data.train.labels, k, SEED))
    return {"k": k, "images": images, "before": before, "peak": _max_rss(), "reset": float(reset),
            "cuda_peak": float(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else 0.0,
            "theoretical": float(2 * images * c * h * w * 4)}


def measure_memory(cfg: DictConfig, device: torch.device, sizes: Sizes, rec: Recorder) -> None:
    """(e) Peak memory of the cached-feature evaluator, in a spawned child (a clean high-water
    mark, not this process's), next to the theoretical size of the cached tensors."""
    args = (*(OmegaConf.to_container(node, resolve=True) for node in (cfg.data, cfg.backbone, cfg.eval)),
            str(device), sizes.memory_k, cfg.channels_last)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        out = pool.submit(_memory_child, *args).result()
    mb = 2 ** 20
    mark = "while the evaluator ran" if out["reset"] else "since the process started"
    rec.add("eval_cache_images", "evaluator", out["images"], f"images (K={int(out['k'])})")
    rec.add("eval_cache_theoretical_mb", "evaluator", out["theoretical"] / mb,
            "MiB (2 x N x C x h x w x 4 B)")
    rec.add("eval_rss_before_eval_mb", "evaluator", out["before"] / mb, "MiB (resident: torch, data, model)")
    rec.add("eval_peak_rss_mb", "evaluator", out["peak"] / mb, f"MiB (ru_maxrss {mark})")
    rec.add("eval_peak_rss_increase_mb", "evaluator", max(out["peak"] - out["before"], 0.0) / mb,
            "MiB (peak minus resident before)")
    if device.type == "cuda":
        rec.add("eval_peak_cuda_mb", "evaluator", out["cuda_peak"] / mb, "MiB (max_memory_allocated)")


# --------------------------------------------------------------------------- main


PARITY_NOTES = [
    "Both pipelines feed the same model, head, loss, optimiser and step code (`Trainer`); "
    "only the batch source differs. The conventional one decodes/serves PIL images per sample, "
    "applies torchvision RandomCrop/RandomHorizontalFlip/ToTensor/Normalize and the task's "
    "pseudo-labelling per sample in DataLoader workers, then collates.",
    "With an image folder the conventional pipeline decodes each JPEG whenever a sample is drawn, "
    "as torchvision's ImageFolder does, while ours decoded the set once into a cached tensor; "
    "`--conventional-source memory` serves PIL images from an in-memory array instead "
    "(torchvision's CIFAR10 style) to leave decoding out.",
    "Random draws come from each worker's RNG: same distributions as ours, not the same numbers. "
    "With the randomness off, the conventional samples equal ours (tests/test_perf.py).",
    "RandomCrop pads with the mean pixel rounded to uint8; ours pads normalised images with "
    "exact zeros (the mean pixel).",
    "Rotation: the conventional batch is image-major (4 rotations of an image adjacent), ours "
    "rotation-major; the model sees the same set of inputs.",
    "Inpainting random masks (random_block/random_region) are drawn per sample with the task's "
    "own mask function; central masks are identical.",
    "On CPU the conventional DataLoader workers and the training threads share the same cores; "
    "that contention is part of what is measured.",
    "FLOP counts cover convolutions and matmuls only (BatchNorm, ReLU, pooling uncounted); on "
    "CUDA, cuDNN convolutions may use TF32 while the reference torch.mm is strict float32.",
    "Peak RSS is a fresh child process's high-water mark (Python, torch, data and evaluator), "
    "restarted just before the evaluator where Linux allows; `eval_rss_before_eval_mb` is what "
    "was resident then. The evaluator also holds the test set's conv2 features and indexes the "
    "cache into per-K copies, so the peak can exceed the theoretical cache size.",
]


def _train_rate(backbone_cfg: DictConfig, shape: Sequence[int], device: torch.device, precision: str,
                channels_last: bool, sizes: Sizes) -> float:
    """Backbone forward+backward images/s at `precision` (a plain loss on the pooled features)."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    backbone = make_backbone(backbone_cfg, device, channels_last).train()
    x = torch.randn(sizes.batch_size, *shape, device=device).contiguous(memory_format=memory_format)

    def fwd_bwd() -> None:
        backbone.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = backbone(x).float().square().mean()
        loss.backward()

    return sizes.batch_size / timed(fwd_bwd, sizes.steps, sizes.repeats, sizes.warmup, device,
                                    sizes.min_window_s)


def measure_precision(cfg: DictConfig, data: DataSplits, device: torch.device, sizes: Sizes,
                      rec: Recorder, auto_precision: str) -> None:
    """(f) fp32 vs bf16: matmul rates and backbone training rates, measured side by side."""
    n = sizes.matmul_n
    for precision in ("fp32", "bf16"):
        dtype = torch.float32 if precision == "fp32" else torch.bfloat16
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        seconds = timed(lambda a=a, b=b: torch.mm(a, b), 1, sizes.matmul_reps, 1, device, 0.0)
        rec.add(f"matmul_gflops_{precision}", "machine", 2 * n ** 3 / seconds / 1e9,
                f"GFLOP/s ({precision} mm {n}x{n})")
    rec.add("precision_auto_is_bf16", "machine", float(auto_precision == "bf16"),
            "1 = precision=auto picks bf16 here")
    shape = tuple(data.train.images.shape[1:])
    backbones = {name: compose_config([f"backbone={name}"]).backbone for name in ("small", "small2")}
    backbones.setdefault(cfg.backbone.name, cfg.backbone)
    for name, backbone_cfg in backbones.items():
        rates = {p: _train_rate(backbone_cfg, shape, device, p, cfg.channels_last, sizes)
                 for p in ("fp32", "bf16")}
        for p, rate in rates.items():
            rec.add(f"precision_{p}_images_per_s", name, rate, "images/s (backbone fwd+bwd)")
        rec.add("precision_bf16_speedup", name, rates["bf16"] / rates["fp32"], "x (bf16 / fp32)")


def _single_thread_rate(backbone_cfg: dict, shape: tuple, precision: str, channels_last: bool,
                        sizes: Sizes) -> float:
    torch.set_num_threads(1)
    return _train_rate(OmegaConf.create(backbone_cfg), shape, torch.device("cpu"), precision,
                       channels_last, sizes)


def measure_jobs(cfg: DictConfig, data: DataSplits, sizes: Sizes, rec: Recorder) -> None:
    """(g) One process with every core vs one single-thread process per core, at once."""
    cores = torch.get_num_threads()
    shape = tuple(data.train.images.shape[1:])
    one = _train_rate(cfg.backbone, shape, torch.device("cpu"), cfg.precision, cfg.channels_last, sizes)
    backbone_cfg = OmegaConf.to_container(cfg.backbone, resolve=True)
    with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn")) as pool:
        rates = list(pool.map(_single_thread_rate, *zip(*[(backbone_cfg, shape, cfg.precision,
                                                           cfg.channels_last, sizes)] * cores)))
    rec.add("jobs_one_process_images_per_s", cfg.backbone.name, one, f"images/s ({cores} threads)")
    rec.add("jobs_parallel_images_per_s", cfg.backbone.name, sum(rates),
            f"images/s ({cores} processes x 1 thread, summed)")
    rec.add("jobs_parallel_speedup", cfg.backbone.name, sum(rates) / one, "x (parallel / one)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ssl-bench-perf", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=DEFAULT_DATA_ROOT,
                   help="CIFAR-10 (image folder or torchvision files); synthetic data when missing")
    p.add_argument("--out", default="runs/perf.csv", help="CSV path; the Markdown table goes next to it")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds): for tests, not for numbers")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, ...")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated pretext tasks")
    p.add_argument("--parts", default="abcdefg",
                   help="which measurements: a (batch build share), b (vs conventional), c (evaluator), "
                        "d (FLOP/s), e (memory), f (fp32 vs bf16), g (one job vs one per core)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per measurement")
    p.add_argument("--repeats", type=int, default=None, help="timing windows (median reported)")
    p.add_argument("--batch-size", type=int, default=None, help="default: train.batch_size (128)")
    p.add_argument("--workers", type=int, default=2, help="conventional DataLoader workers")
    p.add_argument("--eval-k", type=int, default=None, help="labels per class for (c) (default 100)")
    p.add_argument("--eval-steps", type=int, default=None,
                   help="evaluator steps for (c); default: what the profile gives K")
    p.add_argument("--memory-k", type=int, default=5000, help="labels per class for (e) (5000 = all)")
    p.add_argument("--conventional-source", choices=("auto", "files", "memory"), default="auto",
                   help="files: decode the JPEGs per sample (torchvision ImageFolder); memory: PIL "
                        "images from an in-memory array (torchvision CIFAR10); auto: files when "
                        "--data-root is an image folder")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. backbone=nin precision=bf16")
    args = p.parse_args(argv)
    unknown = sorted(set(args.tasks.split(",")) - set(TASKS))
    if unknown:
        p.error(f"--tasks: unknown {unknown}; choose from {', '.join(TASKS)}")
    if not args.parts or set(args.parts) - set("abcdefg"):
        p.error(f"--parts takes letters from abcdefg, got {args.parts!r}")
    return args


def make_sizes(args: argparse.Namespace, cfg: DictConfig, device: torch.device) -> Sizes:
    """Full size fits ~10 minutes on a 2-core CPU; --quick is seconds."""
    if args.quick:
        sizes = Sizes(batch_size=16, steps=1, repeats=1, warmup=1, eval_k=10, eval_steps=4,
                      memory_k=args.memory_k, matmul_n=512, matmul_reps=2)
    else:
        sizes = Sizes(batch_size=int(cfg.train.batch_size), steps=24, repeats=3, warmup=2,
                      eval_k=100, eval_steps=None, memory_k=args.memory_k,
                      matmul_n=2048 if device.type == "cpu" else 8192, matmul_reps=5, min_window_s=1.0)
    sizes.batch_size = args.batch_size or sizes.batch_size
    sizes.steps = args.steps or sizes.steps
    sizes.repeats = max(1, min(args.repeats or sizes.repeats, sizes.steps))
    sizes.eval_k = args.eval_k or sizes.eval_k
    sizes.eval_steps = args.eval_steps or sizes.eval_steps
    return sizes


def conventional_images(data: DataSplits, root: Path, source: str) -> tuple[Dataset, str]:
    """The conventional pipeline's image source and a description of it."""
    folder = root.exists() and is_image_folder_root(root)
    if source == "files" or (source == "auto" and folder):
        if not folder:
            raise UserError(f"--conventional-source files needs an image folder at {root}")
        from torchvision.datasets import ImageFolder

        folder_set = ImageFolder(str(root / "train"))
        return folder_set, f"JPEG files decoded per sample (ImageFolder {root / 'train'})"
    array = data.unlabeled.permute(0, 2, 3, 1).contiguous().numpy()
    return ArrayImages(array), f"in-memory uint8 array, PIL image per sample ({len(array)} images)"


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main(argv: Sequence[str] | None = None) -> None:
    """Run every measurement, print the table, write the CSV and the Markdown report."""
    args = parse_args(argv)
    try:
        _main(args)
    except UserError as exc:
        print(f"ssl-bench-perf: error: {exc}", file=sys.stderr)
        sys.exit(2)


def _main(args: argparse.Namespace) -> None:
    rec = Recorder()
    root = Path(args.data_root).expanduser()
    extra, fallback = data_overrides(root, args.quick, args.overrides)
    base = [*extra, "progress=false", *args.overrides]
    device = resolve_device(args.device)
    auto_precision = resolve_precision(compose_config(base).precision, device)
    base.append(f"precision={auto_precision}")  # every composed config gets the resolved one
    cfg = compose_config(base)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(SEED)
    sizes = make_sizes(args, cfg, device)
    if fallback:
        rec.say(f"NOTE: {fallback}")
    data = load_data(cfg.data)
    rec.say(f"data: {data.source}, {len(data.unlabeled)} unlabeled / {len(data.train)} train / "
            f"{len(data.test)} test images; device {device}, {torch.get_num_threads()} threads; {sizes}")
    base_images, source = conventional_images(data, root, args.conventional_source)
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{cpu_name()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"
    eval_setting = "not measured"

    def header() -> list[str]:
        lines = [
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {time.perf_counter() - rec.start:.0f} s; "
            f"torch {torch.__version__}; device {device} ({hardware}); parts {args.parts}",
            f"data: {data.source}" + (f" (**{fallback}**)" if fallback else ""),
            f"conventional pipeline: {source}; DataLoader with {args.workers} persistent workers",
            f"backbone {cfg.backbone.name}, batch {sizes.batch_size}, precision {cfg.precision}, "
            f"channels_last {cfg.channels_last}; {sizes.steps} timed steps in {sizes.repeats} windows "
            f"(median) after {sizes.warmup} warm-up",
            f"evaluator (c): {eval_setting}; memory (e): K={sizes.memory_k} clamped to the smallest class",
        ]
        return (["**--quick: tiny sizes, the numbers are not meaningful**"] if args.quick else []) + lines

    def save() -> Path:  # after every part, so a failure late in the run keeps the rest
        return write_outputs(rec.rows, Path(args.out), header(), PARITY_NOTES)

    if set(args.parts) & set("ab"):
        images = data.unlabeled.to(device)
        for name in args.tasks.split(","):
            versus = f" vs conventional, {args.workers} workers" if "b" in args.parts else ""
            rec.say(f"{name}: ours{versus}")
            measure_pipelines(name, compose_config([*base, f"task={name}"]), data, images, base_images,
                              device, sizes, args.workers, rec, conventional="b" in args.parts)
            save()
        del images
    if "c" in args.parts:
        rec.say("evaluator: cached conv2 features vs recomputing conv1-conv2")
        eval_setting = measure_evaluator(cfg, data, device, sizes, rec)
        save()
    if "d" in args.parts:
        rec.say("FLOP/s: backbone training vs float32 matmul")
        measure_flops(cfg, data, device, sizes, rec)
        save()
    if "e" in args.parts:
        rec.say("peak memory of the cached-feature evaluator (fresh process)")
        measure_memory(cfg, device, sizes, rec)
        save()
    if "f" in args.parts:
        rec.say(f"precision: fp32 vs bf16 autocast (auto picks {auto_precision} here)")
        measure_precision(cfg, data, device, sizes, rec, auto_precision)
        save()
    if "g" in args.parts and device.type == "cpu":
        rec.say("parallelism: one process with every core vs one single-thread process per core")
        measure_jobs(cfg, data, sizes, rec)
    md = save()
    print("\n" + "\n".join(header()) + "\n\n" + markdown_table(rec.rows))
    print(f"\nwrote {args.out} and {md}")


if __name__ == "__main__":
    main()
