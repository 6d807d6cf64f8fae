"""The search loop: alternate α steps and weight steps on two halves of the unlabeled images.

The unlabeled training images are split once (seeded) into a weight half and an α half.
Each step draws a batch from both, lets the pretext task build inputs and pseudo-labels,
takes one α step (first or second order, `architect.py`) on the α half and then one SGD
step of the weights on the weight half, as DARTS does with its train/validation split —
only the loss is the pretext task's, so no label is read.

A search lives in a cache folder named by a hash of its settings
(`<runs_dir>/search/<task>_<data>_s<seed>_<hash>/`): `alpha.jsonl` (one line per epoch:
losses, α, softmax(α), the genotype it would give), `alpha.png`, `checkpoint.pt` after
every epoch, and once finished `genotype_<hash>.json` and `search.json`. A finished search
with the same settings is reused; a half-done one resumes after its last epoch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from ssl_bench import tasks
from ssl_bench.batching import index_batches
from ssl_bench.checkpoint import Checkpoint, keep_logged_epochs
from ssl_bench.data import DataSplits, load_data
from ssl_bench.device import machine_name, resolve_precision
from ssl_bench.errors import UserError
from ssl_bench.loop import Step, to_memory_format, train_steps
from ssl_bench.run import _data_identity, digest
from ssl_bench.runlog import append_jsonl, cache_entry, git_sha, now_iso
from ssl_bench.search.architect import Architect, Batch, SearchModel
from ssl_bench.search.genotype import CELL_TYPES, Genotype, load_genotype, save_genotype
from ssl_bench.search.model import SearchNetwork, count_parameters
from ssl_bench.search.plot import plot_alphas
from ssl_bench.seeds import derive
from ssl_bench.tasks.base import PretextTask
from ssl_bench.train import pretext_batch, pretext_metrics, steps_per_epoch

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    epochs: int
    steps: int
    seconds: float            # search time (this search's steps, summed over restarts)
    final_loss: float         # weight-half pretext loss, last epoch's mean
    final_alpha_loss: float   # α-half pretext loss, last epoch's mean
    train_metric: float
    pretext_metric: float     # search network on held-out test images (labels unused)
    metric_name: str
    search_parameters: int    # weights of the search network (α and task head excluded)
    genotype: dict
    genotype_path: str


def search_identity(cfg: DictConfig) -> dict:
    """Everything a search's result depends on (device, threads, paths and labels excluded)."""
    settings = OmegaConf.to_container(cfg.search, resolve=True)
    settings.pop("profile", None)  # type: ignore[union-attr]
    return {"task": OmegaConf.to_container(cfg.task, resolve=True), "data": _data_identity(cfg.data),
            "search": settings, "augment": OmegaConf.to_container(cfg.train.augment, resolve=True),
            "seed": int(cfg.seed)}


def search_dir(cfg: DictConfig) -> Path:
    name = f"{cfg.task.name}_{cfg.data.name}_s{int(cfg.seed)}"
    return Path(cfg.paths.runs_dir) / "search" / f"{name}_{digest(search_identity(cfg))}"


def split_halves(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint halves of range(n), seeded: (weight half, α half)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:n // 2], order[n // 2:]


def build_task(cfg: DictConfig, net: SearchNetwork, data: DataSplits) -> PretextTask:
    """The configured pretext task for the search network; single-phase tasks only."""
    if not cfg.task.pretrain or cfg.task.module is None:
        raise UserError(f"task={cfg.task.name} has no pretext loss to search with; choose a pretext "
                        f"task (rotation, jigsaw, relative_position, inpainting, multitask, ...)")
    return tasks.build_task(cfg.task.module, net, data, single_phase_for=f"task={cfg.task.name}")


def read_log(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def alpha_record(net: SearchNetwork) -> dict[str, Any]:
    """α, softmax(α) and the genotype they give, as JSON-able lists (edges × operations)."""
    weights = net.cell_weights()
    return {"alpha": {k: getattr(net, f"alpha_{k}").detach().cpu().tolist() for k in CELL_TYPES},
            "softmax": {k: weights[k].detach().cpu().tolist() for k in CELL_TYPES},
            "genotype": net.genotype().to_dict()}


@dataclass
class _SearchLoop:
    """What one search's steps share: the models, optimisers, batch sources and counters."""

    net: SearchNetwork
    task: PretextTask
    model: SearchModel
    architect: Architect
    w_opt: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    weights: list[torch.nn.Parameter]
    gen: torch.Generator
    make: Callable[[torch.Tensor, torch.Tensor], Batch]
    per_epoch: int
    cfg: DictConfig  # the `search` node
    device: torch.device
    precision: str
    log_path: Path
    started: float = 0.0
    seconds_before: float = 0.0
    step: int = 0
    loss: float = math.nan
    alpha_loss: float = math.nan
    metric: float = math.nan


def run_search(net: SearchNetwork, task: PretextTask, data: DataSplits, cfg: DictConfig,
               folder: Path, device: torch.device, seed: int, channels_last: bool = True,
               progress: bool = True, precision: str = "fp32") -> SearchResult:
    """Search α (and train the weights) as `cfg` (the whole config; `cfg.search` sizes it) says.

    Writes `alpha.jsonl`, `checkpoint.pt` (every epoch), `alpha.png` and the genotype file
    into `folder`, resuming from the checkpoint when there is one.
    """
    s = cfg.search
    if float(s.xi) > 0 and precision != "fp32":
        raise UserError("search.xi > 0 (second order) takes finite differences of gradients, "
                        "which bfloat16 is too coarse for; use precision=fp32 or search.xi=0")
    if not task.built:
        raise RuntimeError(f"{type(task).__name__} was not built: make tasks with ssl_bench.tasks.build_task")
    folder.mkdir(parents=True, exist_ok=True)
    net.to(device)
    task.to(device)
    images = (data.train.images if task.needs_labels else data.unlabeled).to(device)
    labels = data.train.labels.to(device) if task.needs_labels else None
    mean, std = data.mean.to(device), data.std.to(device)
    weight_half, alpha_half = (h.to(device) for h in split_halves(len(images), seed))
    per_epoch = steps_per_epoch(len(weight_half), s.batch_size, s.steps_per_epoch)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        net.to(memory_format=memory_format)
    loop = _search_loop(net, task, s, device, precision, per_epoch, seed, folder)

    def make(batch_idx: torch.Tensor, half: torch.Tensor) -> Batch:
        inputs, targets = pretext_batch(task, images, labels, half[batch_idx.to(device)], mean, std,
                                        cfg.train.augment, loop.gen)
        return Batch(to_memory_format(inputs, memory_format), targets)

    loop.make = make
    checkpoint = Checkpoint(folder / "checkpoint.pt")
    done = _resume_search(loop, checkpoint)
    loop.started, loop.step = time.perf_counter(), per_epoch * done
    w_batches = index_batches(len(weight_half), s.batch_size, seed, start_step=loop.step)
    a_batches = index_batches(len(alpha_half), s.batch_size, derive(seed, "search_alpha_order"),
                              start_step=loop.step)
    bar = tqdm(total=per_epoch * s.epochs, initial=loop.step, disable=not progress,
               desc=f"search {cfg.task.name}", dynamic_ncols=True, leave=False)
    loop.model.train()
    for epoch in range(done + 1, s.epochs + 1):
        _search_epoch(loop, epoch, lambda: make(next(w_batches), weight_half),
                      lambda: make(next(a_batches), alpha_half), bar)
        _save_search_epoch(loop, epoch, checkpoint)
    bar.close()
    return _finish_search(loop, data, cfg, folder, seed, memory_format)


def _search_loop(net: SearchNetwork, task: PretextTask, s: DictConfig, device: torch.device,
                 precision: str, per_epoch: int, seed: int, folder: Path) -> _SearchLoop:
    """The weights' SGD (cosine to `lr_min`), the α optimiser and the augmentation stream."""
    model = SearchModel(net, task)
    arch_ids = {id(p) for p in net.arch_parameters()}
    weights = [p for p in model.parameters() if id(p) not in arch_ids]
    w_cfg = s.weights
    w_opt = torch.optim.SGD(weights, lr=w_cfg.lr, momentum=w_cfg.momentum,
                            nesterov=w_cfg.nesterov, weight_decay=w_cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=max(per_epoch * s.epochs, 1),
                                                          eta_min=w_cfg.lr_min)
    architect = Architect(model, w_opt, lr=s.arch.lr, betas=tuple(s.arch.betas),
                          weight_decay=s.arch.weight_decay, xi=s.xi, fd_radius=s.fd_radius,
                          precision=precision)
    gen = torch.Generator(device=device).manual_seed(derive(seed, "augment"))
    return _SearchLoop(net, task, model, architect, w_opt, schedule, weights, gen, None,  # type: ignore[arg-type]
                       per_epoch, s, device, precision, folder / "alpha.jsonl")


def _checkpoint_parts(loop: _SearchLoop) -> dict[str, Any]:
    return {"net": loop.net, "task": loop.task, "w_opt": loop.w_opt, "schedule": loop.schedule,
            "arch_opt": loop.architect.optimizer}


def _resume_search(loop: _SearchLoop, checkpoint: Checkpoint) -> int:
    """Epochs already done: the checkpoint's state restored (0, and a fresh log, without one)."""
    parts = _checkpoint_parts(loop)
    state = checkpoint.load(loop.device, parts, recompute="searches from epoch 0")
    if state is None:
        loop.log_path.unlink(missing_ok=True)
        append_jsonl(loop.log_path, {"epoch": 0, "step": 0, **alpha_record(loop.net)})  # the start
        return 0
    checkpoint.restore(state, parts, loop.gen)
    loop.seconds_before = state["seconds"]
    keep_logged_epochs(loop.log_path, state["epoch"])
    log.info("resuming the search in %s after epoch %d", checkpoint.path.parent, state["epoch"])
    return int(state["epoch"])


def _search_epoch(loop: _SearchLoop, epoch: int, weight_batch: Callable[[], Batch],
                  alpha_batch: Callable[[], Batch], bar: Any) -> None:
    """One pass: at every step an α step on the α half (after the warm-up epochs), then a
    weight step on the weight half; sets the epoch's mean losses and metric."""
    s, task = loop.cfg, loop.task
    epoch_start = time.perf_counter()
    sums = {"loss": 0.0, "alpha": 0.0, "alpha_steps": 0, "steps": 0}
    metric_sums: dict[str, float] = {}

    def next_batch() -> tuple[Any, Any, int]:
        train = weight_batch()
        return train.inputs, train.targets, s.batch_size

    def alpha_step(step: Step) -> None:
        val = alpha_batch()  # drawn after the weight half's batch, as every step does
        if epoch > s.warmup_epochs:  # α moves only once the weights have had a start
            sums["alpha"] += loop.architect.step(Batch(step.inputs, step.targets), val)
            sums["alpha_steps"] += 1

    def forward(inputs: Any, targets: Any, scale: float) -> tuple[torch.Tensor, Any]:
        outputs = loop.model(inputs)
        return task.loss(outputs, targets), outputs

    def record(step: Step) -> None:
        loop.architect.optimizer.zero_grad(set_to_none=True)  # α's share of this backward
        sums["loss"] += step.loss.item()
        sums["steps"] += 1
        for name, value in task.metrics(step.outputs, step.targets).items():
            metric_sums[name] = metric_sums.get(name, 0.0) + value
        bar.set_postfix(loss=f"{sums['loss'] / sums['steps']:.3f}",
                        alpha_loss=f"{sums['alpha'] / max(sums['alpha_steps'], 1):.3f}")

    train_steps(forward, next_batch, loop.w_opt, loop.schedule, loop.per_epoch, device=loop.device,
                precision=loop.precision, start=loop.step, shard=False,
                diverged=lambda value, n: (f"search loss became {value} at step {n}; lower "
                                           f"search.weights.lr (now {s.weights.lr}) or "
                                           f"search.arch.lr and run again"),
                clip=(loop.weights, s.weights.grad_clip), before_step=alpha_step, after_step=record, bar=bar)
    loop.step += loop.per_epoch
    loop.loss = sums["loss"] / loop.per_epoch
    loop.alpha_loss = sums["alpha"] / sums["alpha_steps"] if sums["alpha_steps"] else math.nan
    train_metrics = {f"train_{k}": v / loop.per_epoch for k, v in metric_sums.items()}
    loop.metric = train_metrics.get(f"train_{task.metric_name}", math.nan)
    seconds = time.perf_counter() - epoch_start
    append_jsonl(loop.log_path, {"epoch": epoch, "step": loop.step, "loss": loop.loss,
                                 "alpha_loss": None if math.isnan(loop.alpha_loss) else loop.alpha_loss,
                                 **train_metrics, "lr": loop.w_opt.param_groups[0]["lr"],
                                 "epoch_seconds": seconds, **alpha_record(loop.net)})
    log.info("search epoch %d: loss %.4f, α-half loss %.4f, %s %.3f (%.0fs)\n%s", epoch, loop.loss,
             loop.alpha_loss, task.metric_name, loop.metric, seconds, loop.net.genotype().describe())


def _save_search_epoch(loop: _SearchLoop, epoch: int, checkpoint: Checkpoint) -> None:
    checkpoint.save(_checkpoint_parts(loop), loop.gen, epoch=epoch, step=loop.step,
                    seconds=loop.seconds_before + time.perf_counter() - loop.started,
                    finished=epoch == loop.cfg.epochs)


def _finish_search(loop: _SearchLoop, data: DataSplits, cfg: DictConfig, folder: Path, seed: int,
                   memory_format: torch.memory_format) -> SearchResult:
    """The derived genotype (file and α plot), the held-out pretext metric, and the result."""
    s, net, task = loop.cfg, loop.net, loop.task
    seconds = loop.seconds_before + time.perf_counter() - loop.started
    records = read_log(loop.log_path)
    if math.isnan(loop.loss) and len(records) > 1:  # every epoch was done before a restart
        last = records[-1]
        loop.loss, loop.alpha_loss = last["loss"], last["alpha_loss"] or math.nan
        loop.metric = last.get(f"train_{task.metric_name}", math.nan)
    genotype: Genotype = net.genotype()
    held_out = pretext_metrics(net, task, data, cfg.train.pretext_eval_images, loop.device, seed,
                               memory_format)
    path = save_genotype(genotype, folder, {
        "task": cfg.task.name, "data": cfg.data.name, "seed": seed, "search_dir": str(folder),
        "epochs": s.epochs, "steps": loop.step, "xi": float(s.xi), "git_sha": git_sha(),
        "written_at": now_iso()})
    plot_alphas(records, folder / "alpha.png", net.primitives, net.nodes, genotype,
                title=f"DARTS search with {cfg.task.name} on {cfg.data.name}, seed {seed}")
    result = SearchResult(s.epochs, loop.step, seconds, loop.loss, loop.alpha_loss, loop.metric,
                          held_out.get(task.metric_name, math.nan), task.metric_name,
                          count_parameters(net) - sum(p.numel() for p in net.arch_parameters()),
                          genotype.to_dict(), str(path))
    log.info("search done in %.0fs: genotype %s\n%s", seconds, path, genotype.describe())
    return result


@dataclass
class SearchOutcome:
    result: SearchResult
    reused: bool
    folder: Path

    @property
    def genotype_path(self) -> Path:
        return Path(self.result.genotype_path)


def searched(cfg: DictConfig, device: torch.device, data: DataSplits | None = None) -> SearchOutcome:
    """Run the configured search, or load it when the same search already finished.

    A lock on the cache folder makes concurrent jobs with the same search wait for one
    another instead of searching twice.
    """
    folder = search_dir(cfg)
    seed = int(cfg.seed)
    with cache_entry(folder, "this search", search_identity(cfg), "search.json",
                     result_type=SearchResult) as entry:
        if entry.record is not None:
            result = entry.result
            try:
                load_genotype(result.genotype_path)  # the file is there and still its content
                log.info("reusing the finished search in %s (%.0fs when it ran)", folder, result.seconds)
                return SearchOutcome(result, True, folder)
            except UserError as exc:  # written again from the last epoch's checkpoint below
                entry.discard(str(exc), "writes the genotype again from the search's checkpoint")
        data = data if data is not None else load_data(cfg.data)
        net_cfg = cfg.search.network
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # α and weights initialised from the seed
            try:
                net = SearchNetwork(net_cfg.channels, net_cfg.cells, net_cfg.nodes,
                                    net_cfg.stem_multiplier, in_channels=data.train.images.shape[1])
            except ValueError as exc:
                raise UserError(f"search.network: {exc}") from exc
            task = build_task(cfg, net, data)
        # auto: the second-order step's finite differences need fp32 whatever the hardware
        precision = ("fp32" if cfg.precision == "auto" and float(cfg.search.xi) > 0
                     else resolve_precision(cfg.precision, device))
        result = run_search(net, task, data, cfg, folder, device, seed, cfg.channels_last,
                            cfg.progress, precision)
        entry.finish(asdict(result), machine=machine_name(device), precision=precision)
        return SearchOutcome(result, False, folder)
