"""One run: pretrain once (unless the task has no pretraining), evaluate every K, record.

Everything a run produces lands in its own folder: the resolved config, `meta.json`
(git sha, seed, device, times), `metrics.jsonl`, `checkpoint.pt` and `results.json`;
then its rows are appended to the leaderboard.
"""

from __future__ import annotations

import logging
import platform
import time
import uuid
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ssl_bench.backbone import ConvBackbone
from ssl_bench.data import load_data
from ssl_bench.errors import UserError, instantiate
from ssl_bench.evaluate import evaluate, evaluate_scratch
from ssl_bench.leaderboard import append_rows
from ssl_bench.runlog import atomic_write_bytes, atomic_write_json, git_sha, now_iso
from ssl_bench.tasks.base import PretextTask
from ssl_bench.train import pretrain

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when available; an unavailable explicit device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name} asked for, but CUDA is not available; use device=auto or cpu")
    return device


def build_backbone(cfg: DictConfig, seed: int) -> ConvBackbone:
    """The configured backbone, initialised from `seed` (the random-init baseline's weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return instantiate(cfg)


def run(cfg: DictConfig, run_dir: Path) -> list[dict]:
    """Pretrain and evaluate as `cfg` says, writing into `run_dir`; returns leaderboard rows."""
    started_at, t0 = now_iso(), time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    seed = int(cfg.seed)
    # everything not drawn from an explicit generator (e.g. head initialisation) follows the seed
    torch.manual_seed(seed)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.task.name}-s{seed}-{uuid.uuid4().hex[:6]}"
    sha = git_sha()
    meta = {"run_id": run_id, "git_sha": sha, "seed": seed, "device": str(device),
            "torch": torch.__version__, "python": platform.python_version(),
            "host": platform.node(), "started_at": started_at}
    atomic_write_bytes(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())
    atomic_write_json(run_dir / "meta.json", meta)
    log.info("run %s  git %s  device %s  seed %d\n%s", run_id, sha, device, seed,
             OmegaConf.to_yaml(cfg, resolve=True))

    data = load_data(cfg.data)
    log.info("data: %s, %d train / %d test / %d unlabeled images of %s, %d classes",
             data.source, len(data.train), len(data.test), len(data.unlabeled),
             tuple(data.train.images.shape[1:]), data.num_classes)
    smallest = int(data.train.class_counts().min())
    bad = [k for k in cfg.eval.labels_per_class if not 0 < int(k) <= smallest]
    if bad:  # checked before pretraining, so a bad K costs seconds, not a pretraining
        raise UserError(f"eval.labels_per_class has {bad}, but each value must be in "
                        f"1..{smallest} (the smallest class of {data.name}'s train split)")

    backbone = build_backbone(cfg.backbone, seed).to(device)
    if cfg.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    pretext = None
    if cfg.task.pretrain:
        task: PretextTask = instantiate(cfg.task.module, feature_dim=backbone.out_channels(),
                                        image_shape=tuple(data.train.images.shape[1:]))
        task = task.bind_data(data.mean, data.std, data.num_classes).to(device)
        pretext = pretrain(backbone, task, data, cfg.train, run_dir, device, seed,
                           cfg.channels_last, cfg.progress)
    pretrain_seconds = pretext.seconds if pretext else 0.0

    if cfg.task.evaluation == "scratch":
        results = evaluate_scratch(lambda s: build_backbone(cfg.backbone, s), data, cfg.eval, seed,
                                   device, cfg.channels_last, cfg.progress)
    elif cfg.task.evaluation == "frozen":
        results = evaluate(backbone, data, cfg.eval, seed, device, cfg.channels_last, cfg.progress)
    else:
        raise UserError(f"task.evaluation must be 'frozen' or 'scratch', got {cfg.task.evaluation!r}")
    finished_at = now_iso()
    rows = [{
        "run_id": run_id, "task": cfg.task.name, "dataset": cfg.data.name,
        "backbone": cfg.backbone.name, "protocol": cfg.eval.protocol,
        "labels_per_class": r["labels_per_class"], "seed": seed, "test_acc": r["test_acc"],
        "pretext_metric": pretext.pretext_metric if pretext else None,
        "pretext_metric_name": pretext.metric_name if pretext else None,
        "pretrain_seconds": pretrain_seconds, "eval_seconds": r["eval_seconds"],
        "eval_steps": r["eval_steps"], "profile": cfg.profile_name, "git_sha": sha,
        "finished_at": finished_at, "run_dir": str(run_dir),
    } for r in results]
    meta.update(finished_at=finished_at, total_seconds=time.perf_counter() - t0,
                pretrain_seconds=pretrain_seconds,
                eval_seconds=sum(r["eval_seconds"] for r in results))
    atomic_write_json(run_dir / "results.json", {"meta": meta, "pretrain": vars(pretext)
                                                 if pretext else None, "results": rows})
    atomic_write_json(run_dir / "meta.json", meta)
    append_rows(Path(cfg.leaderboard.path), rows)
    log.info("appended %d rows to %s", len(rows), cfg.leaderboard.path)
    return rows
