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
    labels = data.train.labels.to(device) if task.needs_labels else None
    mean, std = data.mean.to(device), data.std.to(device)
    per_epoch = steps_per_epoch(len(images), cfg.batch_size, cfg.steps_per_epoch)
    phases = task.phases(backbone)
    aug_gen = torch.Generator(device=device).manual_seed(derive(seed, "augment"))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    checkpoint_path = run_dir / "checkpoint.pt"
    state = load_checkpoint(checkpoint_path, backbone, task, device)
    done_epochs = state["epoch"] if state else 0
    previous_seconds = state.get("seconds", 0.0) if state else 0.0
    if state:
        log.info("resuming pretraining from %s after epoch %d", checkpoint_path, done_epochs)
        set_rng_state(aug_gen, state["rng"])
        if ctx.is_main:
            keep_logged_epochs(run_dir / "metrics.jsonl", done_epochs)

    start = time.perf_counter()
    step, epoch, loss_value, metric_value = per_epoch * done_epochs, done_epochs, math.nan, math.nan
    batches = index_batches(len(images), cfg.batch_size, seed, start_step=step)
    bar = tqdm(total=per_epoch * cfg.epochs * len(phases), initial=step,
               disable=not (progress and ctx.is_main),
               desc=f"pretrain {type(task).__name__}", dynamic_ncols=True, leave=False)
    for phase_index, phase in enumerate(phases):
        phase_done = min(max(done_epochs - phase_index * cfg.epochs, 0), cfg.epochs)
        if phase_done == cfg.epochs:
            continue
        params = enter_phase(backbone, task, phase)
        optimizer = make_optimizer(params, **cfg.optimizer)
        schedule = make_schedule(optimizer, total_steps=per_epoch * cfg.epochs,
                                 warmup_steps=round(cfg.schedule.warmup_epochs * per_epoch),
                                 **{k: v for k, v in cfg.schedule.items() if k != "warmup_epochs"})
        if phase_done and state:
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
        with distributed.synced_batchnorm(backbone, task):
            model = distributed.data_parallel(PretextStep(backbone, task), device)
            for _ in range(phase_done, cfg.epochs):
                epoch += 1
                epoch_start = time.perf_counter()
                loss_sum = torch.zeros((), device=device)
                metric_sums: dict[str, float] = {}
                for i in range(per_epoch):
                    idx = next(batches).to(device)
                    inputs, targets = pretext_batch(task, images, labels, idx, mean, std, cfg.augment,
                                                    aug_gen)
                    part = distributed.shard(inputs, targets, len(idx))
                    with autocast(device, precision):
                        loss, outputs = model(to_memory_format(part.inputs, memory_format),
                                              part.targets, part.scale)
                    sgd_step(loss, optimizer, schedule, lambda value, step=step, epoch=epoch: (
                        f"pretraining loss became {value} at step {step + 1} (epoch {epoch}); "
                        f"lower train.optimizer.lr (now {cfg.optimizer.lr}) and run again"))
                    step += 1
                    loss_sum += loss.detach()
                    for name, value in task.metrics(outputs, part.targets).items():
                        metric_sums[name] = metric_sums.get(name, 0.0) + value
                    bar.update(1)
                    if step % 10 == 0:
                        bar.set_postfix(phase=phase.name, loss=f"{loss.item():.3f}", **{
                            task.metric_name: f"{metric_sums[task.metric_name] / (i + 1):.3f}"})
                # the global batch's mean loss: the mean over processes of their scaled losses
                names = sorted(metric_sums)
                totals = distributed.mean_over_ranks(torch.stack(
                    [loss_sum.float().cpu(), *(torch.tensor(metric_sums[k]) for k in names)]))
                loss_value = totals[0].item() / per_epoch
                train_metrics = {f"train_{k}": totals[j + 1].item() / per_epoch
                                 for j, k in enumerate(names)}
                metric_value = train_metrics[f"train_{task.metric_name}"]
                seconds = time.perf_counter() - epoch_start
                log.info("epoch %d (%s) loss %.4f %s %.3f", epoch, phase.name, loss_value,
                         task.metric_name, metric_value)
                if not ctx.is_main:
                    continue
                append_jsonl(run_dir / "metrics.jsonl", {
                    "epoch": epoch, "phase": phase.name, "step": step, "loss": loss_value,
                    **train_metrics, "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": seconds,
                    "images_per_second": per_epoch * cfg.batch_size / seconds,
                    "processes": ctx.world})
                atomic_torch_save(checkpoint_path, {
                    "backbone": backbone.state_dict(), "task": task.state_dict(),
                    "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "phase": phase.name, "epoch": epoch, "step": step, "rng": rng_state(aug_gen),
                    "seconds": previous_seconds + time.perf_counter() - start})
    bar.close()
    seconds = previous_seconds + time.perf_counter() - start
    if math.isnan(metric_value) and state:  # every epoch was already done before the restart
        last = _last_epoch_record(run_dir / "metrics.jsonl")
        loss_value = last.get("loss", math.nan)
        metric_value = last.get(f"train_{task.metric_name}", math.nan)
    held_out = pretext_metrics(backbone, task, data, cfg.pretext_eval_images, device, seed,
                               memory_format)  # every rank holds the same weights: same numbers
    log.info("held-out pretext metrics: %s", ", ".join(f"{k} {v:.2f}" for k, v in held_out.items()))
    if ctx.is_main:
        append_jsonl(run_dir / "metrics.jsonl",
                     {"held_out": True, **{f"test_{k}": v for k, v in held_out.items()}})
        sample = to_float(data.test.images[heldout_indices(data, 8)].to(device), mean, std)
        task.on_pretrain_end(backbone, sample, run_dir)
    backbone.train()
    result = PretrainResult(epoch, step, seconds, loss_value, metric_value,
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
