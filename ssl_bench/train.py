"""Pretraining loop: any pretext task, one backbone, checkpoints and JSON-line metrics.

Data stays one uint8 tensor on the model's device; each step indexes a batch, normalises
and augments it in bulk, and lets the task build its inputs and pseudo-labels. Labels of
the training set are never read here.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from ssl_bench.backbone import ConvBackbone
from ssl_bench.batching import index_batches
from ssl_bench.data.augment import augment, to_float
from ssl_bench.data.imageset import DataSplits
from ssl_bench.errors import NonFiniteLossError
from ssl_bench.optim import make_optimizer, make_schedule
from ssl_bench.runlog import append_jsonl, atomic_torch_save
from ssl_bench.tasks.base import PretextTask

log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    epochs: int
    steps: int
    seconds: float
    final_loss: float
    train_metric: float
    pretext_metric: float  # on held-out (test) images, no augmentation
    metric_name: str


def steps_per_epoch(num_images: int, batch_size: int, limit: int | None) -> int:
    steps = max(num_images // batch_size, 1)
    return min(steps, limit) if limit else steps


def pretrain(backbone: ConvBackbone, task: PretextTask, data: DataSplits, cfg: DictConfig,
             run_dir: Path, device: torch.device, seed: int, channels_last: bool = True,
             progress: bool = True) -> PretrainResult:
    """Train `backbone` + `task`'s head on `data.unlabeled` as `cfg` (the `train` node) says."""
    images = data.unlabeled.to(device)
    mean, std = data.mean.to(device), data.std.to(device)
    params = list(backbone.parameters()) + list(task.parameters())
    optimizer = make_optimizer(params, **cfg.optimizer)
    per_epoch = steps_per_epoch(len(images), cfg.batch_size, cfg.steps_per_epoch)
    total = per_epoch * cfg.epochs
    schedule = make_schedule(optimizer, total_steps=total,
                             warmup_steps=round(cfg.schedule.warmup_epochs * per_epoch),
                             **{k: v for k, v in cfg.schedule.items() if k != "warmup_epochs"})
    order_gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1)
    batches = index_batches(len(images), cfg.batch_size, order_gen)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    backbone.train()
    task.train()
    start = time.perf_counter()
    step, loss_value, metric_value = 0, math.nan, math.nan
    bar = tqdm(total=total, desc=f"pretrain {type(task).__name__}", disable=not progress,
               dynamic_ncols=True, leave=False)
    for epoch in range(1, cfg.epochs + 1):
        epoch_start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        metric_sums: dict[str, float] = {}
        for i in range(per_epoch):
            idx = next(batches).to(device)
            x = augment(to_float(images[idx], mean, std), cfg.augment.crop_padding,
                        cfg.augment.flip, aug_gen)
            inputs, targets = task.make_batch(x, aug_gen)
            outputs = task(backbone, inputs.contiguous(memory_format=memory_format))
            loss = task.loss(outputs, targets)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"pretraining loss became {loss.item()} at step {step + 1} (epoch {epoch}); "
                    f"lower train.optimizer.lr (now {cfg.optimizer.lr}) and run again")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            loss_sum += loss.detach()
            for name, value in task.metrics(outputs.detach(), targets).items():
                metric_sums[name] = metric_sums.get(name, 0.0) + value
            bar.update(1)
            if step % 10 == 0 or step == total:
                bar.set_postfix(loss=f"{loss.item():.3f}",
                                **{task.metric_name: f"{metric_sums[task.metric_name] / (i + 1):.3f}"})
        loss_value = loss_sum.item() / per_epoch
        train_metrics = {f"train_{k}": v / per_epoch for k, v in metric_sums.items()}
        metric_value = train_metrics[f"train_{task.metric_name}"]
        seconds = time.perf_counter() - epoch_start
        append_jsonl(run_dir / "metrics.jsonl", {
            "epoch": epoch, "step": step, "loss": loss_value, **train_metrics,
            "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": seconds,
            "images_per_second": per_epoch * cfg.batch_size / seconds})
        atomic_torch_save(run_dir / "checkpoint.pt", {
            "backbone": backbone.state_dict(), "task": task.state_dict(),
            "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "epoch": epoch, "step": step})
        log.info("epoch %d/%d loss %.4f %s %.3f", epoch, cfg.epochs, loss_value,
                 task.metric_name, metric_value)
    bar.close()
    seconds = time.perf_counter() - start
    held_out = pretext_metrics(backbone, task, data, cfg.pretext_eval_images, device, seed,
                               memory_format)
    append_jsonl(run_dir / "metrics.jsonl",
                 {"held_out": True, **{f"test_{k}": v for k, v in held_out.items()}})
    sample = to_float(heldout_images(data, 8).to(device), mean, std)
    task.on_pretrain_end(backbone, sample, run_dir)
    result = PretrainResult(cfg.epochs, step, seconds, loss_value, metric_value,
                            held_out[task.metric_name], task.metric_name)
    log.info("pretraining done: %s", asdict(result))
    return result


def heldout_images(data: DataSplits, n: int) -> torch.Tensor:
    """`n` random test images (uint8), the same ones for every run whatever its seed.

    Random rather than the first n, because image folders list the test set class by class.
    """
    pick = torch.randperm(len(data.test), generator=torch.Generator().manual_seed(0))[:n]
    return data.test.images[pick]


@torch.no_grad()
def pretext_metrics(backbone: ConvBackbone, task: PretextTask, data: DataSplits, max_images: int,
                    device: torch.device, seed: int,
                    memory_format: torch.memory_format = torch.contiguous_format,
                    chunk: int = 256) -> dict[str, float]:
    """The task's metrics on up to `max_images` test images (labels unused), eval mode."""
    backbone.eval()
    task.eval()
    gen = torch.Generator(device=device).manual_seed(seed + 2)
    images = heldout_images(data, max_images).to(device)
    sums: dict[str, float] = {}
    for i in range(0, len(images), chunk):
        x = to_float(images[i:i + chunk], data.mean, data.std)
        inputs, targets = task.make_batch(x, gen)
        outputs = task(backbone, inputs.contiguous(memory_format=memory_format))
        for name, value in task.metrics(outputs, targets).items():
            sums[name] = sums.get(name, 0.0) + value * len(x)
    backbone.train()
    task.train()
    return {k: v / max(len(images), 1) for k, v in sums.items()}
