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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from ssl_bench.batching import index_batches
from ssl_bench.data import DataSplits, load_data
from ssl_bench.device import autocast, resolve_precision
from ssl_bench.errors import UserError, instantiate
from ssl_bench.optim import sgd_step
from ssl_bench.run import _data_identity, digest
from ssl_bench.runlog import (
    append_jsonl,
    atomic_torch_save,
    cache_entry,
    git_sha,
    now_iso,
)
from ssl_bench.search.architect import Architect, Batch, SearchModel
from ssl_bench.search.genotype import CELL_TYPES, Genotype, save_genotype
from ssl_bench.search.model import SearchNetwork, count_parameters
from ssl_bench.search.plot import plot_alphas
from ssl_bench.seeds import derive
from ssl_bench.tasks.base import PretextTask
from ssl_bench.train import (
    keep_logged_epochs,
    pretext_batch,
    pretext_metrics,
    rng_state,
    set_rng_state,
    steps_per_epoch,
    to_memory_format,
)

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
    """The configured pretext task, as `run.pretrained` builds it; single-phase tasks only."""
    if not cfg.task.pretrain or cfg.task.module is None:
        raise UserError(f"task={cfg.task.name} has no pretext loss to search with; choose a pretext "
                        f"task (rotation, jigsaw, relative_position, inpainting, multitask, ...)")
    task: PretextTask = instantiate(cfg.task.module, feature_dim=net.out_channels(),
                                    image_shape=tuple(data.train.images.shape[1:]))
    if type(task).phases is not PretextTask.phases:
        raise UserError(f"task={cfg.task.name} trains the backbone in phases (stage by stage); "
                        f"a search trains all cells together: choose a single-phase pretext task")
    return task.bind_data(data.mean, data.std, data.num_classes)


def read_log(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def alpha_record(net: SearchNetwork) -> dict[str, Any]:
    """α, softmax(α) and the genotype they give, as JSON-able lists (edges × operations)."""
    weights = net.cell_weights()
    return {"alpha": {k: getattr(net, f"alpha_{k}").detach().cpu().tolist() for k in CELL_TYPES},
            "softmax": {k: weights[k].detach().cpu().tolist() for k in CELL_TYPES},
            "genotype": net.genotype().to_dict()}


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
    folder.mkdir(parents=True, exist_ok=True)
    net.to(device)
    task.to(device)
    model = SearchModel(net, task)
    images = (data.train.images if task.needs_labels else data.unlabeled).to(device)
    labels = data.train.labels.to(device) if task.needs_labels else None
    mean, std = data.mean.to(device), data.std.to(device)
    weight_half, alpha_half = (h.to(device) for h in split_halves(len(images), seed))
    per_epoch = steps_per_epoch(len(weight_half), s.batch_size, s.steps_per_epoch)
    total = per_epoch * s.epochs
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        net.to(memory_format=memory_format)

    arch_ids = {id(p) for p in net.arch_parameters()}
    weights = [p for p in model.parameters() if id(p) not in arch_ids]
    w_cfg = s.weights
    w_opt = torch.optim.SGD(weights, lr=w_cfg.lr, momentum=w_cfg.momentum,
                            nesterov=w_cfg.nesterov, weight_decay=w_cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=max(total, 1), eta_min=w_cfg.lr_min)
    architect = Architect(model, w_opt, lr=s.arch.lr, betas=tuple(s.arch.betas),
                          weight_decay=s.arch.weight_decay, xi=s.xi, fd_radius=s.fd_radius,
                          precision=precision)
    gen = torch.Generator(device=device).manual_seed(derive(seed, "augment"))
    aug = cfg.train.augment

    log_path, ckpt_path = folder / "alpha.jsonl", folder / "checkpoint.pt"
    done, previous_seconds = 0, 0.0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        net.load_state_dict(state["net"])
        task.load_state_dict(state["task"])
        w_opt.load_state_dict(state["w_opt"])
        schedule.load_state_dict(state["schedule"])
        architect.optimizer.load_state_dict(state["arch_opt"])
        set_rng_state(gen, state["rng"])
        done, previous_seconds = state["epoch"], state["seconds"]
        keep_logged_epochs(log_path, done)
        log.info("resuming the search in %s after epoch %d", folder, done)
    else:
        log_path.unlink(missing_ok=True)
        append_jsonl(log_path, {"epoch": 0, "step": 0, **alpha_record(net)})  # the starting point

    def make(batch_idx: torch.Tensor, half: torch.Tensor) -> Batch:
        inputs, targets = pretext_batch(task, images, labels, half[batch_idx.to(device)], mean, std,
                                        aug, gen)
        return Batch(to_memory_format(inputs, memory_format), targets)

    start = time.perf_counter()
    step = per_epoch * done
    w_batches = index_batches(len(weight_half), s.batch_size, seed, start_step=step)
    a_batches = index_batches(len(alpha_half), s.batch_size, derive(seed, "search_alpha_order"),
                              start_step=step)
    bar = tqdm(total=total, initial=step, disable=not progress, desc=f"search {cfg.task.name}",
               dynamic_ncols=True, leave=False)
    loss_value = alpha_loss_value = metric_value = math.nan
    model.train()
    for epoch in range(done + 1, s.epochs + 1):
        epoch_start = time.perf_counter()
        loss_sum, alpha_sum, alpha_steps, metric_sums = 0.0, 0.0, 0, {}
        for i in range(per_epoch):
            train, val = make(next(w_batches), weight_half), make(next(a_batches), alpha_half)
            if epoch > s.warmup_epochs:  # α moves only once the weights have had a start
                alpha_sum += architect.step(train, val)
                alpha_steps += 1
            with autocast(device, precision):
                outputs = model(train.inputs)
                loss = task.loss(outputs, train.targets)
            sgd_step(loss, w_opt, schedule, lambda value, step=step: (
                f"search loss became {value} at step {step + 1}; lower search.weights.lr "
                f"(now {w_cfg.lr}) or search.arch.lr and run again"), clip=(weights, w_cfg.grad_clip))
            architect.optimizer.zero_grad(set_to_none=True)  # α's share of this backward
            step += 1
            loss_sum += loss.item()
            for name, value in task.metrics(outputs, train.targets).items():
                metric_sums[name] = metric_sums.get(name, 0.0) + value
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / (i + 1):.3f}",
                            alpha_loss=f"{alpha_sum / max(alpha_steps, 1):.3f}")
        seconds = time.perf_counter() - epoch_start
        loss_value = loss_sum / per_epoch
        alpha_loss_value = alpha_sum / alpha_steps if alpha_steps else math.nan
        train_metrics = {f"train_{k}": v / per_epoch for k, v in metric_sums.items()}
        metric_value = train_metrics.get(f"train_{task.metric_name}", math.nan)
        append_jsonl(log_path, {"epoch": epoch, "step": step, "loss": loss_value,
                                "alpha_loss": None if math.isnan(alpha_loss_value) else alpha_loss_value,
                                **train_metrics, "lr": w_opt.param_groups[0]["lr"],
                                "epoch_seconds": seconds, **alpha_record(net)})
        atomic_torch_save(ckpt_path, {
            "net": net.state_dict(), "task": task.state_dict(), "w_opt": w_opt.state_dict(),
            "schedule": schedule.state_dict(), "arch_opt": architect.optimizer.state_dict(),
            "epoch": epoch, "step": step, "rng": rng_state(gen),
            "seconds": previous_seconds + time.perf_counter() - start})
        log.info("search epoch %d: loss %.4f, α-half loss %.4f, %s %.3f (%.0fs)\n%s", epoch, loss_value,
                 alpha_loss_value, task.metric_name, metric_value, seconds, net.genotype().describe())
    bar.close()
    seconds = previous_seconds + time.perf_counter() - start
    records = read_log(log_path)
    if math.isnan(loss_value) and len(records) > 1:  # every epoch was done before a restart
        last = records[-1]
        loss_value, alpha_loss_value = last["loss"], last["alpha_loss"] or math.nan
        metric_value = last.get(f"train_{task.metric_name}", math.nan)

    genotype: Genotype = net.genotype()
    held_out = pretext_metrics(net, task, data, cfg.train.pretext_eval_images, device, seed,
                               memory_format)
    path = save_genotype(genotype, folder, {
        "task": cfg.task.name, "data": cfg.data.name, "seed": seed, "search_dir": str(folder),
        "epochs": s.epochs, "steps": step, "xi": float(s.xi), "git_sha": git_sha(),
        "written_at": now_iso()})
    plot_alphas(records, folder / "alpha.png", net.primitives, net.nodes, genotype,
                title=f"DARTS search with {cfg.task.name} on {cfg.data.name}, seed {seed}")
    result = SearchResult(s.epochs, step, seconds, loss_value, alpha_loss_value, metric_value,
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
    with cache_entry(folder, "this search", search_identity(cfg), "search.json") as entry:
        if entry.record is not None:
            result = SearchResult(**entry.record["result"])
            if Path(result.genotype_path).is_file():
                log.info("reusing the finished search in %s (%.0fs when it ran)", folder, result.seconds)
                return SearchOutcome(result, True, folder)
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
        entry.finish(asdict(result))
        return SearchOutcome(result, False, folder)
