"""Pretraining loop: any pretext task, one backbone, checkpoints and JSON-line metrics.

The JSON-line epoch metrics belong to the pretraining cache (a resumed pretraining keeps
those of its finished epochs); the per-step scalars go to the run's logger (`ssl_bench.logger`).

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

from ssl_bench import distributed, logger
from ssl_bench.backbone import ConvBackbone
from ssl_bench.batching import index_batches
from ssl_bench.chance import at_chance, describe
from ssl_bench.checkpoint import BadCheckpoint, Checkpoint, keep_logged_epochs
from ssl_bench.data.augment import augment, to_float
from ssl_bench.data.imageset import DataSplits
from ssl_bench.loop import Step, to_memory_format, train_steps
from ssl_bench.optim import make_optimizer, make_schedule
from ssl_bench.runlog import append_jsonl
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
    # what guessing scores on the metric (None: not an accuracy, or a record from before
    # it was kept) and the held-out images it was measured on: `at_chance`
    chance_level: float | None = None
    heldout_images: int | None = None

    def at_chance(self) -> bool:
        """Whether the held-out pretext metric is no better than guessing (`ssl_bench.chance`)."""
        return at_chance(self.pretext_metric, self.chance_level, self.heldout_images)


def steps_per_epoch(num_images: int, batch_size: int, limit: int | None) -> int:
    steps = max(num_images // batch_size, 1)
    return min(steps, limit) if limit else steps


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


def load_pretrained(folder: Path, backbone: ConvBackbone, task: PretextTask, device: torch.device,
                    result: PretrainResult) -> None:
    """Load a finished pretraining's weights into `backbone` and `task`, verified: the
    checkpoint must be the one of its last epoch (as `pretrain.json` says), not an earlier one."""
    checkpoint = Checkpoint(folder / "checkpoint.pt")
    parts = {"backbone": backbone, "task": task}
    state = checkpoint.load(device, parts)
    if state is None or int(state["epoch"]) != result.epochs or state.get("finished") is False:
        found = "is missing" if state is None else f"is that of epoch {state['epoch']}"
        raise BadCheckpoint(checkpoint.path, f"{found}, not that of the last epoch ({result.epochs}) "
                                             f"of the finished pretraining")
    checkpoint.restore(state, parts)


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
    checkpoint: Checkpoint
    total_epochs: int  # over every phase
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
    if not task.built:
        raise RuntimeError(f"{type(task).__name__} was not built: make tasks with ssl_bench.tasks.build_task")
    ctx = distributed.context()
    images = (data.train.images if task.needs_labels else data.unlabeled).to(device)
    per_epoch = steps_per_epoch(len(images), cfg.batch_size, cfg.steps_per_epoch)
    phases = task.phases(backbone)
    aug_gen = torch.Generator(device=device).manual_seed(derive(seed, "augment"))
    checkpoint = Checkpoint(run_dir / "checkpoint.pt")
    state = checkpoint.load(device, {"backbone": backbone, "task": task},
                            recompute="pretrains from epoch 0")
    done_epochs = state["epoch"] if state else 0
    if state:
        log.info("resuming pretraining from %s after epoch %d", checkpoint.path, done_epochs)
        checkpoint.restore(state, {"backbone": backbone, "task": task}, aug_gen)
        if ctx.is_main:
            keep_logged_epochs(run_dir / "metrics.jsonl", done_epochs)
    loop = _Loop(backbone, task, images, data.train.labels.to(device) if task.needs_labels else None,
                 data.mean.to(device), data.std.to(device), cfg, device, precision,
                 torch.channels_last if channels_last else torch.contiguous_format, aug_gen,
                 per_epoch, run_dir, checkpoint, cfg.epochs * len(phases), time.perf_counter(),
                 state.get("seconds", 0.0) if state else 0.0, ctx.is_main, ctx.world)
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
        loop.checkpoint.restore(state, {"optimizer": optimizer, "schedule": schedule})
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
    sink = logger.current()
    step_lr = {"lr": optimizer.param_groups[0]["lr"]}

    def note_lr(step: Step) -> None:  # the rate this step uses: the schedule moves it after the step
        step_lr["lr"] = optimizer.param_groups[0]["lr"]

    def next_batch() -> tuple[Any, Any, int]:
        idx = next(loop.batches).to(loop.device)
        inputs, targets = pretext_batch(task, loop.images, loop.labels, idx, loop.mean, loop.std,
                                        cfg.augment, loop.aug_gen)
        return inputs, targets, len(idx)

    def record(step: Step) -> None:
        loss_sum.add_(step.loss.detach())
        metrics = task.metrics(step.outputs, step.targets)
        for name, value in metrics.items():
            metric_sums[name] = metric_sums.get(name, 0.0) + value
        if sink.due(step.number):  # the loss stays a device tensor: the logger reads it later
            sink.scalar("pretrain/loss", step.loss.detach(), step.number)
            sink.scalar("pretrain/lr", step_lr["lr"], step.number)
            for name, value in metrics.items():
                sink.scalar(f"pretrain/{name}", value, step.number)
        if step.number % 10 == 0:
            done = step.number - loop.step
            loop.bar.set_postfix(phase=phase.name, loss=f"{step.loss.item():.3f}", **{
                task.metric_name: f"{metric_sums[task.metric_name] / done:.3f}"})

    train_steps(model, next_batch, optimizer, schedule, loop.per_epoch, device=loop.device,
                precision=loop.precision, memory_format=loop.memory_format, start=loop.step,
                diverged=lambda value, n: (f"pretraining loss became {value} at step {n} (epoch "
                                           f"{loop.epoch}); lower train.optimizer.lr (now "
                                           f"{cfg.optimizer.lr}) and run again"),
                before_step=note_lr, after_step=record, bar=loop.bar)
    loop.step += loop.per_epoch
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
    loop.checkpoint.save({"backbone": loop.backbone, "task": loop.task, "optimizer": optimizer,
                          "schedule": schedule}, loop.aug_gen, epoch=loop.epoch, step=loop.step,
                         seconds=loop.seconds_before + time.perf_counter() - loop.started,
                         finished=loop.epoch == loop.total_epochs, phase=phase.name)


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
                            held_out[task.metric_name], task.metric_name, task.chance_level,
                            min(int(loop.cfg.pretext_eval_images), len(data.test)))
    log.info("pretraining done: %s", asdict(result))
    if result.at_chance() and loop.is_main:
        warn_pretext_at_chance(result, loop.run_dir, loop.cfg.optimizer.lr)
    return result


def warn_pretext_at_chance(result: PretrainResult, folder: Path, lr: float) -> None:
    """One warning line: which pretraining, its metric against chance, what it means, what to try."""
    log.warning("pretraining %s ended at chance level: held-out %s %s, final loss %.4f; it most likely "
                "diverged or learnt nothing, and every row evaluated on it is flagged (at_chance=pretext)"
                "; try a lower train.optimizer.lr (now %s) and check the data", folder.name,
                result.metric_name, describe(result.pretext_metric, result.chance_level,
                                             result.heldout_images), result.final_loss, lr)


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
