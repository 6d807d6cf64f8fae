"""Pretraining loop: any pretext task, one backbone, checkpoints and JSON-line metrics.

Data stays one uint8 tensor on the model's device; each step indexes a batch, normalises
and augments it in bulk, and lets the task build its inputs and pseudo-labels. Labels of
the training set are read only by tasks that declare `needs_labels` (the supervised upper
bound). A task may split pretraining into phases (greedy layer-wise training); each phase
gets `train.epochs` epochs, its own optimiser and schedule, and trains only its modules.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from ssl_bench import distributed
from ssl_bench.backbone import ConvBackbone
from ssl_bench.batching import index_batches
from ssl_bench.data.augment import augment, to_float
from ssl_bench.data.imageset import DataSplits
from ssl_bench.device import autocast
from ssl_bench.optim import make_optimizer, make_schedule, sgd_step
from ssl_bench.runlog import append_jsonl, atomic_torch_save, atomic_write_bytes
from ssl_bench.seeds import derive
from ssl_bench.tasks.base import Phase, PretextTask

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


def to_memory_format(inputs: Any, memory_format: torch.memory_format) -> Any:
    """Image batches (4-D tensors, also inside dicts of them) in the given memory format."""
    if isinstance(inputs, dict):
        return {k: to_memory_format(v, memory_format) for k, v in inputs.items()}
    if isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
        return inputs.contiguous(memory_format=memory_format)
    return inputs


def pretext_batch(task: PretextTask, images: torch.Tensor, labels: torch.Tensor | None,
                  idx: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, augment_cfg: DictConfig,
                  generator: torch.Generator) -> tuple[Any, Any]:
    """Inputs and targets of one training batch: images `idx`, normalised, augmented, then the task's."""
    x = augment(to_float(images[idx], mean, std), augment_cfg.crop_padding, augment_cfg.flip, generator)
    return task.make_batch(x, generator, labels[idx] if labels is not None else None)


class PretextStep(torch.nn.Module):
    """Backbone + task as one module whose forward gives the (scaled) loss and the outputs.

    One module, so DistributedDataParallel sees every parameter a step uses (a task's loss
    may have its own, e.g. the inpainting discriminator).
    """

    def __init__(self, backbone: ConvBackbone, task: PretextTask):
        super().__init__()
        self.backbone, self.task = backbone, task

    def forward(self, inputs: Any, targets: Any, scale: float = 1.0) -> tuple[torch.Tensor, Any]:
        outputs = self.task(self.backbone, inputs)
        return self.task.loss(outputs, targets) * scale, outputs


def enter_phase(backbone: ConvBackbone, task: PretextTask, phase: Phase) -> list[torch.nn.Parameter]:
    """Eval mode everywhere, then train mode for the phase's modules; returns their parameters."""
    backbone.eval()
    task.eval()
    params: dict[int, torch.nn.Parameter] = {}
    for module in phase.modules:
        module.train()
        params.update((id(p), p) for p in module.parameters())
    task.set_phase(phase)
    return list(params.values())


def rng_state(aug_gen: torch.Generator) -> dict[str, Any]:
    """The random state a resumed run needs to draw what an uninterrupted one would."""
    state = {"aug": aug_gen.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(aug_gen: torch.Generator, state: dict[str, Any]) -> None:
    aug_gen.set_state(state["aug"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Path, backbone: ConvBackbone, task: PretextTask,
                    device: torch.device) -> dict[str, Any] | None:
    """The last epoch's checkpoint (weights loaded into `backbone` and `task`), or None."""
    if not path.exists():
        return None
    task.phases(backbone)  # a task's modules are complete once its phases exist (layerwise
    # builds its decoders there), so a reused pretraining loads into the same parameter set
    state = torch.load(path, map_location=device, weights_only=False)
    backbone.load_state_dict(state["backbone"])
    task.load_state_dict(state["task"])
    return state


def keep_logged_epochs(path: Path, last_epoch: int) -> None:
    """Keep the metric lines of the checkpoint's epochs, drop later ones and held-out lines.

    Each epoch's line is written just before its checkpoint, so a kill in between leaves a
    line that the resumed run writes again.
    """
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines()
             if line.strip() and json.loads(line).get("epoch", last_epoch + 1) <= last_epoch]
    atomic_write_bytes(path, ("\n".join(lines) + "\n" if lines else "").encode())


@dataclass
class _Loop:
    """The state one pretraining's steps share: what they read, and the counters they move."""

    backbone: ConvBackbone
    task: PretextTask
    images: torch.Tensor
    labels: torch.Tensor | None
    mean: torch.Tensor
    std: torch.Tensor
    cfg: DictConfig
    device: torch.device
    precision: str
    memory_format: torch.memory_format
    aug_gen: torch.Generator
    per_epoch: int
    run_dir: Path
    started: float  # perf_counter at the (re)start; `seconds_before` ran before it
    seconds_before: float
    is_main: bool
    world: int
    batches: Iterator[torch.Tensor] | None = None
    bar: Any = None
    step: int = 0
    epoch: int = 0
    loss: float = math.nan
    metric: float = math.nan


def pretrain(backbone: ConvBackbone, task: PretextTask, data: DataSplits, cfg: DictConfig,
             run_dir: Path, device: torch.device, seed: int, channels_last: bool = True,
             progress: bool = True, precision: str = "fp32") -> PretrainResult:
    """Train `backbone` + `task`'s modules as `cfg` (the `train` node) says.

    `run_dir/checkpoint.pt` is written after every epoch (atomically) with the weights,
    optimiser, schedule and random-generator states. When it is already there, training
    resumes after its epoch, and ends with the same weights an uninterrupted run reaches
    (on CPU; GPU kernels may differ in the last bits).

    Under `torchrun` every process builds the same global batch and trains on its slice
    (`ssl_bench.distributed`); only rank 0 writes files.
    """
    ctx = distributed.context()
    images = (data.train.images if task.needs_labels else data.unlabeled).to(device)
    per_epoch = steps_per_epoch(len(images), cfg.batch_size, cfg.steps_per_epoch)
    phases = task.phases(backbone)
    aug_gen = torch.Generator(device=device).manual_seed(derive(seed, "augment"))
    state = load_checkpoint(run_dir / "checkpoint.pt", backbone, task, device)
    done_epochs = state["epoch"] if state else 0
    if state:
        log.info("resuming pretraining from %s after epoch %d", run_dir / "checkpoint.pt", done_epochs)
        set_rng_state(aug_gen, state["rng"])
        if ctx.is_main:
            keep_logged_epochs(run_dir / "metrics.jsonl", done_epochs)
    loop = _Loop(backbone, task, images, data.train.labels.to(device) if task.needs_labels else None,
                 data.mean.to(device), data.std.to(device), cfg, device, precision,
                 torch.channels_last if channels_last else torch.contiguous_format, aug_gen,
                 per_epoch, run_dir, time.perf_counter(), state.get("seconds", 0.0) if state else 0.0,
                 ctx.is_main, ctx.world)
    loop.step, loop.epoch = per_epoch * done_epochs, done_epochs
    loop.batches = index_batches(len(images), cfg.batch_size, seed, start_step=loop.step)
    loop.bar = tqdm(total=per_epoch * cfg.epochs * len(phases), initial=loop.step,
                    disable=not (progress and ctx.is_main),
                    desc=f"pretrain {type(task).__name__}", dynamic_ncols=True, leave=False)
    for phase_index, phase in enumerate(phases):
        phase_done = min(max(done_epochs - phase_index * cfg.epochs, 0), cfg.epochs)
        if phase_done < cfg.epochs:
            _train_phase(loop, phase, phase_done, state)
    loop.bar.close()
    return _finish(loop, data, seed, state is not None)


def _train_phase(loop: _Loop, phase: Phase, epochs_done: int, state: dict[str, Any] | None) -> None:
    """The remaining epochs of one phase: its own optimiser and schedule (restored from the
    checkpoint when the phase was under way), a checkpoint after every epoch."""
    cfg = loop.cfg
    params = enter_phase(loop.backbone, loop.task, phase)
    optimizer = make_optimizer(params, **cfg.optimizer)
    schedule = make_schedule(optimizer, total_steps=loop.per_epoch * cfg.epochs,
                             warmup_steps=round(cfg.schedule.warmup_epochs * loop.per_epoch),
                             **{k: v for k, v in cfg.schedule.items() if k != "warmup_epochs"})
    if epochs_done and state:
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
    with distributed.synced_batchnorm(loop.backbone, loop.task):
        model = distributed.data_parallel(PretextStep(loop.backbone, loop.task), loop.device)
        for _ in range(epochs_done, cfg.epochs):
            loop.epoch += 1
            epoch_start = time.perf_counter()
            train_metrics = _run_epoch(loop, model, optimizer, schedule, phase)
            seconds = time.perf_counter() - epoch_start
            log.info("epoch %d (%s) loss %.4f %s %.3f", loop.epoch, phase.name, loop.loss,
                     loop.task.metric_name, loop.metric)
            if loop.is_main:
                _save_epoch(loop, phase, optimizer, schedule, train_metrics, seconds)


def _run_epoch(loop: _Loop, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               schedule: torch.optim.lr_scheduler.LRScheduler, phase: Phase) -> dict[str, float]:
    """One pass: `per_epoch` steps; sets the epoch's mean loss and metric, returns the metrics."""
    cfg, task = loop.cfg, loop.task
    loss_sum = torch.zeros((), device=loop.device)
    metric_sums: dict[str, float] = {}
    for i in range(loop.per_epoch):
        idx = next(loop.batches).to(loop.device)
        inputs, targets = pretext_batch(task, loop.images, loop.labels, idx, loop.mean, loop.std,
                                        cfg.augment, loop.aug_gen)
        part = distributed.shard(inputs, targets, len(idx))
        with autocast(loop.device, loop.precision):
            loss, outputs = model(to_memory_format(part.inputs, loop.memory_format), part.targets,
                                  part.scale)
        sgd_step(loss, optimizer, schedule, lambda value, step=loop.step, epoch=loop.epoch: (
            f"pretraining loss became {value} at step {step + 1} (epoch {epoch}); "
            f"lower train.optimizer.lr (now {cfg.optimizer.lr}) and run again"))
        loop.step += 1
        loss_sum += loss.detach()
        for name, value in task.metrics(outputs, part.targets).items():
            metric_sums[name] = metric_sums.get(name, 0.0) + value
        loop.bar.update(1)
        if loop.step % 10 == 0:
            loop.bar.set_postfix(phase=phase.name, loss=f"{loss.item():.3f}", **{
                task.metric_name: f"{metric_sums[task.metric_name] / (i + 1):.3f}"})
    # the global batch's mean loss: the mean over processes of their scaled losses
    names = sorted(metric_sums)
    totals = distributed.mean_over_ranks(torch.stack(
        [loss_sum.float().cpu(), *(torch.tensor(metric_sums[k]) for k in names)]))
    loop.loss = totals[0].item() / loop.per_epoch
    train_metrics = {f"train_{k}": totals[j + 1].item() / loop.per_epoch for j, k in enumerate(names)}
    loop.metric = train_metrics[f"train_{task.metric_name}"]
    return train_metrics


def _save_epoch(loop: _Loop, phase: Phase, optimizer: torch.optim.Optimizer,
                schedule: torch.optim.lr_scheduler.LRScheduler, train_metrics: dict[str, float],
                seconds: float) -> None:
    """The epoch's metrics line, then its checkpoint (so a kill between them is harmless)."""
    append_jsonl(loop.run_dir / "metrics.jsonl", {
        "epoch": loop.epoch, "phase": phase.name, "step": loop.step, "loss": loop.loss,
        **train_metrics, "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": seconds,
        "images_per_second": loop.per_epoch * loop.cfg.batch_size / seconds, "processes": loop.world})
    atomic_torch_save(loop.run_dir / "checkpoint.pt", {
        "backbone": loop.backbone.state_dict(), "task": loop.task.state_dict(),
        "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
        "phase": phase.name, "epoch": loop.epoch, "step": loop.step, "rng": rng_state(loop.aug_gen),
        "seconds": loop.seconds_before + time.perf_counter() - loop.started})


def _finish(loop: _Loop, data: DataSplits, seed: int, resumed: bool) -> PretrainResult:
    """Held-out pretext metrics, the task's end-of-pretraining artefacts, and the result."""
    seconds = loop.seconds_before + time.perf_counter() - loop.started
    if math.isnan(loop.metric) and resumed:  # every epoch was already done before the restart
        last = _last_epoch_record(loop.run_dir / "metrics.jsonl")
        loop.loss = last.get("loss", math.nan)
        loop.metric = last.get(f"train_{loop.task.metric_name}", math.nan)
    backbone, task = loop.backbone, loop.task
    held_out = pretext_metrics(backbone, task, data, loop.cfg.pretext_eval_images, loop.device, seed,
                               loop.memory_format)  # every rank holds the same weights: same numbers
    log.info("held-out pretext metrics: %s", ", ".join(f"{k} {v:.2f}" for k, v in held_out.items()))
    if loop.is_main:
        append_jsonl(loop.run_dir / "metrics.jsonl",
                     {"held_out": True, **{f"test_{k}": v for k, v in held_out.items()}})
        sample = to_float(data.test.images[heldout_indices(data, 8)].to(loop.device), loop.mean, loop.std)
        task.on_pretrain_end(backbone, sample, loop.run_dir)
    backbone.train()
    result = PretrainResult(loop.epoch, loop.step, seconds, loop.loss, loop.metric,
                            held_out[task.metric_name], task.metric_name)
    log.info("pretraining done: %s", asdict(result))
    return result


def _last_epoch_record(path: Path) -> dict[str, Any]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.exists() else []
    epochs = [r for r in records if "epoch" in r]
    return epochs[-1] if epochs else {}


def heldout_indices(data: DataSplits, n: int) -> torch.Tensor:
    """`n` random test-set indices, the same for every run whatever its seed.

    Random rather than the first n, because image folders list the test set class by class.
    """
    return torch.randperm(len(data.test), generator=torch.Generator().manual_seed(0))[:n]


@torch.no_grad()
def pretext_metrics(backbone: ConvBackbone, task: PretextTask, data: DataSplits, max_images: int,
                    device: torch.device, seed: int,
                    memory_format: torch.memory_format = torch.contiguous_format,
                    chunk: int = 256) -> dict[str, float]:
    """The task's metrics on up to `max_images` test images, eval mode, and again under each
    of the task's `held_out_variants` (keys suffixed with the variant's name).

    Test labels are read only by tasks that need labels (the supervised upper bound).
    """
    backbone.eval()
    task.eval()
    pick = heldout_indices(data, max_images)
    images = data.test.images[pick].to(device)
    labels = data.test.labels[pick].to(device) if task.needs_labels else None

    def measure() -> dict[str, float]:
        gen = torch.Generator(device=device).manual_seed(derive(seed, "heldout"))
        sums: dict[str, float] = {}
        for i in range(0, len(images), chunk):
            x = to_float(images[i:i + chunk], data.mean, data.std)
            inputs, targets = task.make_batch(x, gen, labels[i:i + chunk] if labels is not None else None)
            outputs = task(backbone, to_memory_format(inputs, memory_format))
            for name, value in task.metrics(outputs, targets).items():
                sums[name] = sums.get(name, 0.0) + value * len(x)
        return {k: v / max(len(images), 1) for k, v in sums.items()}

    result = measure()
    for variant, settings in task.held_out_variants().items():
        saved = {attr: getattr(task, attr) for attr in settings}
        try:
            for attr, value in settings.items():
                setattr(task, attr, value)
            result.update({f"{k}_{variant}": v for k, v in measure().items()})
        finally:
            for attr, value in saved.items():
                setattr(task, attr, value)
    return result
