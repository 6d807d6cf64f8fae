"""One run: pretrain once (unless the task has no pretraining), evaluate every K, record.

A run's own folder (Hydra's output folder) gets the resolved config, `meta.json` (git
sha, seed, device, times), `results.json` and the logger's scalars (`ssl_bench.logger`:
`scalars.csv` or `tensorboard/`). Pretraining lives in a cache folder named by
a hash of its settings (`<runs_dir>/pretrain/...`: `checkpoint.pt`, `metrics.jsonl`,
`pretrain.json`), so every run with the same pretraining — another evaluation, a restart
after a crash — reuses it. Each leaderboard row is appended as soon as it is computed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from ssl_bench import configs, distributed, logger
from ssl_bench.backbone import ConvBackbone, backbone_label
from ssl_bench.chance import ACCURACY, at_chance, chance_accuracy, describe, flag
from ssl_bench.checkpoint import BadCheckpoint
from ssl_bench.data import DataSplits, load_data
from ssl_bench.device import machine_name, resolve_device, resolve_precision
from ssl_bench.errors import UserError, instantiate
from ssl_bench.evaluate import evaluate, evaluate_scratch, recalibrate_batchnorm, trainable_copy
from ssl_bench.export import WEIGHTS, save_backbone
from ssl_bench.external import content_hash, is_external
from ssl_bench.external import prepare as prepare_external
from ssl_bench.leaderboard import append_rows
from ssl_bench.leaderboard import read as read_leaderboard
from ssl_bench.paths import normalize_paths
from ssl_bench.probes import probe_protocols, run_probes
from ssl_bench.runlog import atomic_write_bytes, atomic_write_json, cache_entry, git_sha, now_iso
from ssl_bench.schema import validate
from ssl_bench.tasks import build_task
from ssl_bench.train import PretrainResult, load_pretrained, pretrain, warn_pretext_at_chance
from ssl_bench.versions import PRETRAIN_VERSION, RESULTS_HISTORY, RESULTS_VERSION, identity_field

log = logging.getLogger(__name__)
FINETUNE = "finetune"  # the protocol name of fine-tuning rows


def make_deterministic() -> None:
    """Deterministic kernels only (GPU): slower, but the same numbers on every run.

    On CPU the code is deterministic already. On CUDA some kernels (e.g. the backward of
    max pooling and cuDNN's auto-tuned convolutions) may add in varying order; this turns
    them off or makes them raise, so a run either repeats exactly or says which op cannot.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def build_backbone(cfg: DictConfig, seed: int) -> ConvBackbone:
    """The configured backbone, initialised from `seed` (the random-init baseline's weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return instantiate(cfg)


def _data_identity(data_cfg: DictConfig | None) -> dict | None:
    """What defines a data set's content: its config minus the cache folder, root made absolute."""
    if data_cfg is None:
        return None
    ident = OmegaConf.to_container(data_cfg, resolve=True)
    ident.pop("cache_dir", None)  # type: ignore[union-attr]
    # without it a bad file stops the run, so results never depend on it
    ident.pop("skip_bad_files", None)  # type: ignore[union-attr]
    if ident.get("root"):  # type: ignore[union-attr]
        ident["root"] = str(Path(ident["root"]).expanduser().resolve())  # type: ignore[index]
    return ident  # type: ignore[return-value]


def digest(obj: object) -> str:
    """A short, stable hash of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def pretraining_precision(cfg: DictConfig) -> str:
    """The precision a pretraining runs in: `pretrain_precision` where set, else the run's.

    Separate so that weights pretrained in bf16 (a GPU, a CPU with native bf16) can be found
    again and evaluated in fp32 on a CPU where bf16 is emulated and several times slower; a
    method that does not pretrain has only the run's precision.
    """
    chosen = cfg.get("pretrain_precision")
    return str(chosen) if chosen and cfg.task.pretrain else str(cfg.precision)


def pretrain_identity(cfg: DictConfig, ctx: distributed.Context,
                      version: int | None = None) -> dict:
    """Everything a pretraining's result depends on (device, threads and paths excluded).

    The seed is the pretraining's own (`train.seed`, by default the run's seed), and the
    precision is the pretraining's, resolved (`run` resolves `auto` first): bf16 and fp32
    weights are different pretrainings. The number of processes is excluded, unless BatchNorm
    is left unsynchronised across them: then each process normalises by its own slice and the
    result differs. `ctx` is passed, not read from module state, so the identity of a run
    is a function of its arguments alone.
    """
    ident = {"task": _task_identity(cfg), "data": _data_identity(cfg.data),
             "backbone": OmegaConf.to_container(cfg.backbone, resolve=True),
             "train": OmegaConf.to_container(cfg.train, resolve=True),
             "seed": int(cfg.train.seed), "precision": pretraining_precision(cfg),
             **identity_field("pretrain_version", PRETRAIN_VERSION if version is None else version)}
    if ctx.active and not ctx.sync_batchnorm:
        ident["batchnorm_slices"] = ctx.world
    return ident


def _task_identity(cfg: DictConfig) -> dict:
    """The task's settings; an external checkpoint is its file's content (SHA-256), not its path."""
    task = OmegaConf.to_container(cfg.task, resolve=True)
    if is_external(cfg):
        task["checkpoint"] = {"sha256": content_hash(cfg.task.checkpoint)}  # type: ignore[index]
    return task  # type: ignore[return-value]


def run_identity(cfg: DictConfig, ctx: distributed.Context, version: int | None = None) -> dict:
    """Everything a run's rows depend on, except which K values and protocols are asked for.

    Rows are keyed by (run_id, protocol, K), so adding a K or a probe to a finished run
    computes only the new rows. The protocols added later carry their settings in their
    names instead (fine-tuning has none of its own; `knn_cosine_k<k>_t<T>_<stage>`), so
    adding them left every earlier run id as it was. The evaluator's precision is named
    only where it differs from the pretraining's (`pretrain_precision`), so the ids of runs
    with one precision stayed as they were when the two became separate settings.
    """
    evaluation = OmegaConf.to_container(cfg.eval, resolve=True)
    for key in ("labels_per_class", "data", "finetune"):
        evaluation.pop(key, None)  # type: ignore[union-attr]
    for key in ("enabled", "linear_stages", "knn_stages", "labels_per_class", "cosine_knn"):
        evaluation.get("probes", {}).pop(key, None)  # type: ignore[union-attr]
    evaluator_precision = ({"eval_precision": cfg.precision}
                           if cfg.precision != pretraining_precision(cfg) else {})
    return {**pretrain_identity(cfg, ctx), **evaluator_precision, "eval": evaluation,
            "eval_seed": int(cfg.seed), "eval_data": _data_identity(cfg.eval.get("data")),
            **identity_field("results_version", RESULTS_VERSION if version is None else version)}


def make_run_id(cfg: DictConfig, ctx: distributed.Context, version: int | None = None) -> str:
    """The run id: readable settings, then the hash of the run identity at a results version."""
    return (f"{cfg.task.name}-{cfg.data.name}-{eval_data_config(cfg).name}-{cfg.backbone.name}-"
            f"s{int(cfg.seed)}-{digest(run_identity(cfg, ctx, version))}")


def older_versions(leaderboard: pd.DataFrame, cfg: DictConfig, ctx: distributed.Context) -> list[int]:
    """Older results versions of which the leaderboard holds rows for this configuration."""
    if leaderboard.empty:
        return []
    ids = set(leaderboard["run_id"])
    return [v for v in range(1, RESULTS_VERSION) if make_run_id(cfg, ctx, v) in ids]


def eval_data_config(cfg: DictConfig) -> DictConfig:
    """The data set the evaluator uses: `eval.data` when set (transfer), else `data`."""
    eval_data = cfg.eval.get("data")
    if eval_data is None:
        return cfg.data
    if not isinstance(eval_data, DictConfig):
        raise UserError(f"eval.data={eval_data} is not a data config; choose one from conf/data "
                        f"with data@eval.data={eval_data} (and set eval.data.root=... if needed)")
    return eval_data


def wanted_rows(cfg: DictConfig) -> list[tuple[str, int]]:
    """(protocol, K) pairs this run must produce."""
    rows = [(cfg.eval.protocol, int(k)) for k in sorted(cfg.eval.labels_per_class)]
    if cfg.task.evaluation == "frozen":
        rows += [(p, int(k)) for p in probe_protocols(cfg.eval.probes)
                 for k in sorted(cfg.eval.probes.labels_per_class)]
        if cfg.eval.finetune.enabled:
            rows += [(FINETUNE, int(k)) for k in sorted(cfg.eval.finetune.labels_per_class)]
    return rows


def finished_rows(leaderboard: Path, run_id: str) -> pd.DataFrame:
    table = read_leaderboard(leaderboard)
    return table[table["run_id"] == run_id] if not table.empty else table


def backbone_name(cfg: DictConfig) -> str:
    """The rows' `backbone` label: the preset's name, with what differs from it (`backbone_label`)."""
    return backbone_label(OmegaConf.to_container(cfg.backbone, resolve=True),
                          configs.preset("backbone", str(cfg.backbone.name)))


def pretrain_dir(cfg: DictConfig, ctx: distributed.Context) -> Path:
    """The pretraining cache folder: one per distinct pretraining, shared by every run using it."""
    name = f"{cfg.task.name}_{cfg.data.name}_{cfg.backbone.name}_s{int(cfg.train.seed)}"
    return Path(cfg.paths.runs_dir) / "pretrain" / f"{name}_{digest(pretrain_identity(cfg, ctx))}"


def pretrained(cfg: DictConfig, backbone: ConvBackbone, data: DataSplits, device: torch.device,
               ctx: distributed.Context) -> tuple[PretrainResult, bool, Path]:
    """Pretrain `backbone`, or load it when the same pretraining already finished.

    The cache folder holds `checkpoint.pt` (after every epoch) and, once finished,
    `pretrain.json`. A lock on the folder makes concurrent jobs with the same pretraining
    wait for one another instead of training it twice. Returns (result, reused, folder).

    Under `torchrun` rank 0 holds the lock and decides; every rank trains or loads.
    """
    folder = pretrain_dir(cfg, ctx)
    task = build_task(cfg.task.module, backbone, data, device)
    with cache_entry(folder, "this pretraining", pretrain_identity(cfg, ctx), "pretrain.json",
                     writer=ctx.is_main, result_type=PretrainResult) as entry:
        if distributed.broadcast(entry.record is not None):  # rank 0's reading decides
            try:
                load_pretrained(folder, backbone, task, device, entry.result)
                log.info("reusing the finished pretraining in %s (%.0fs when it ran)", folder,
                         entry.result.seconds)
                if ctx.is_main and not (folder / WEIGHTS).exists():  # finished before exports existed
                    export_backbone(cfg, backbone, folder, entry.result)
                return entry.result, True, folder
            except BadCheckpoint as exc:  # verified before any weight is loaded
                if ctx.active:  # every process must take the same way: stop, with the message
                    raise
                entry.discard(exc.problem, "pretrains again")
                exc.checkpoint.move_aside()
        result = pretrain(backbone, task, data, cfg.train, folder, device, int(cfg.train.seed),
                          cfg.channels_last, cfg.progress, pretraining_precision(cfg))
        entry.finish(asdict(result), machine=machine_name(device), precision=pretraining_precision(cfg))
        if ctx.is_main:
            export_backbone(cfg, backbone, folder, result)
        return result, False, folder


def export_backbone(cfg: DictConfig, backbone: ConvBackbone, folder: Path,
                    result: PretrainResult) -> Path | None:
    """`backbone.safetensors` + `backbone.json` of a finished pretraining (`ssl_bench.export`).

    A copy for use elsewhere, written after the pretraining is recorded as finished: a folder
    that refuses the files (read-only, full) costs a warning, never the run.
    """
    about = {"task": cfg.task.name, "pretrain_id": folder.name, "data": cfg.data.name,
             "epochs": result.epochs, "seed": int(cfg.train.seed),
             "precision": pretraining_precision(cfg),
             "pretext_metric": result.pretext_metric, "pretext_metric_name": result.metric_name,
             "git_sha": git_sha()}
    try:
        path = save_backbone(folder, backbone, OmegaConf.to_container(cfg.backbone, resolve=True), about)
    except OSError as exc:
        log.warning("could not write the backbone's weights into %s (%s); the run goes on without them",
                    folder, exc.strerror or exc)
        return None
    log.info("pretrained backbone weights: %s (ssl_bench.load_backbone reads them)", path)
    return path


def run(cfg: DictConfig, run_dir: Path) -> list[dict]:
    """Pretrain and evaluate as `cfg` says, writing into `run_dir`; returns the run's rows.

    Resumable: the run id is a hash of the configuration, the leaderboard rows already
    present for it are not computed again, and a finished (or half-done) pretraining with
    the same settings is reused (or resumed) from the pretraining cache.
    """
    validate(cfg)  # the CLI checked it already; callers of the API get the same check
    normalize_paths(cfg)  # every path below means the file the user meant (~, $VARS, cwd)
    started_at, t0 = now_iso(), time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    ctx, device = distributed.setup(resolve_device(cfg.device), **cfg.get("distributed", {}))
    if cfg.deterministic:
        make_deterministic()
    cfg.precision = resolve_precision(cfg.precision, device)  # identities hold the resolved one
    cfg.pretrain_precision = resolve_precision(pretraining_precision(cfg), device)
    brought = prepare_external(cfg) if is_external(cfg) else None  # checked before any work
    seed = int(cfg.seed)
    pretrain_seed = int(cfg.train.seed) if cfg.task.pretrain else seed
    # everything not drawn from an explicit generator (e.g. head initialisation) follows the
    # pretraining's seed, then (below) the run's seed for the evaluation
    torch.manual_seed(pretrain_seed)
    run_id = make_run_id(cfg, ctx)
    meta = _write_run_files(cfg, run_dir, ctx, device, run_id, started_at)
    leaderboard = Path(cfg.leaderboard.path)
    done, done_keys, todo = _rows_to_compute(cfg, ctx, leaderboard, run_id)
    if not todo:
        return done.to_dict("records")

    data, eval_data = _load_data(cfg)
    with logger.opened(cfg.logger, run_dir):  # per-step scalars and accuracies (rank 0)
        _log_examples(cfg, data)
        backbone = brought if brought is not None else build_backbone(cfg.backbone, pretrain_seed)
        backbone = backbone.to(device)
        if cfg.channels_last:
            backbone = backbone.to(memory_format=torch.channels_last)
        pretext, reused, pretrain_folder = None, False, None
        if cfg.task.pretrain:
            pretext, reused, pretrain_folder = pretrained(cfg, backbone, data, device, ctx)
        torch.manual_seed(seed)
        rows = RowWriter(cfg, run_id, run_dir, leaderboard, pretext, reused, pretrain_folder,
                         meta["git_sha"], meta["machine"], started_at, ctx.is_main)
        _evaluate(cfg, backbone, eval_data, device, [k for p, k in todo if p == cfg.eval.protocol],
                  done_keys, rows.record)

    distributed.barrier()  # rank 0's rows are in before anyone reads them
    finished = finished_rows(leaderboard, run_id).to_dict("records")
    if not ctx.is_main:
        return finished
    meta.update(finished_at=now_iso(), total_seconds=time.perf_counter() - t0,
                pretrain_seconds=pretext.seconds if pretext and not reused else 0.0,
                pretrain_reused=reused, rows=len(finished))
    atomic_write_json(run_dir / "results.json", {"meta": meta, "pretrain": asdict(pretext)
                                                 if pretext else None, "results": finished})
    atomic_write_json(run_dir / "meta.json", meta)
    log.info("run %s: %d rows in %s", run_id, len(finished), leaderboard)
    return finished


def _log_examples(cfg: DictConfig, data: DataSplits) -> None:
    """The picture `ssl-bench-show` draws of the pretext task, once per run, for a logger
    that keeps pictures (drawn only then)."""
    sink = logger.current()
    if cfg.task.pretrain and sink.takes_images:
        from ssl_bench.show import examples_figure  # show imports the CLI, which imports this module

        sink.image(f"examples/{cfg.task.name}", examples_figure(cfg, data), 0)


def _write_run_files(cfg: DictConfig, run_dir: Path, ctx: distributed.Context, device: torch.device,
                     run_id: str, started_at: str) -> dict:
    """The run folder's resolved config and metadata (git sha, seed, machine), before any work."""
    sha = git_sha()
    meta = {"run_id": run_id, "git_sha": sha, "seed": int(cfg.seed), "device": str(device),
            "threads": torch.get_num_threads(), "channels_last": bool(cfg.channels_last),
            "deterministic": bool(cfg.deterministic), "precision": cfg.precision,
            "pretrain_precision": pretraining_precision(cfg) if cfg.task.pretrain else None,
            "processes": ctx.world, "torch": torch.__version__, "python": platform.python_version(),
            "host": platform.node(), "machine": machine_name(device), "started_at": started_at}
    if ctx.is_main:
        atomic_write_bytes(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())
        atomic_write_json(run_dir / "meta.json", meta)
    log.info("run %s  git %s  device %s  seed %d\n%s", run_id, sha, device, int(cfg.seed),
             OmegaConf.to_yaml(cfg, resolve=True))
    return meta


def _rows_to_compute(cfg: DictConfig, ctx: distributed.Context, leaderboard: Path,
                     run_id: str) -> tuple[pd.DataFrame, set, list[tuple[str, int]]]:
    """(rows already in the leaderboard, their (protocol, K) keys, the keys still to compute)."""
    wanted = wanted_rows(cfg)
    table = read_leaderboard(leaderboard)
    done = table[table["run_id"] == run_id] if not table.empty else table
    if done.empty and ctx.is_main:
        older = older_versions(table, cfg, ctx)
        if older:  # kept in the CSV, left out of the summaries, not reused
            log.warning("%s holds rows of results version %d for this configuration; version %d "
                        "changed what they measure (%s), so they are kept but recomputed as %s",
                        leaderboard, older[-1], RESULTS_VERSION, RESULTS_HISTORY[RESULTS_VERSION], run_id)
    done_keys = set(zip(done["protocol"], done["labels_per_class"].astype(int))) if len(done) else set()
    done_keys = distributed.broadcast(done_keys)  # rank 0's reading is the one every rank follows
    todo = [w for w in wanted if w not in done_keys]
    if not todo:
        log.info("run %s: all %d rows are already in %s; nothing to do", run_id, len(wanted), leaderboard)
        if ctx.is_main:
            print(f"ssl-bench: {run_id} already finished ({len(wanted)} rows in {leaderboard}); skipped")
    elif done_keys:
        log.info("run %s: %d of %d rows already in the leaderboard; computing the other %d",
                 run_id, len(wanted) - len(todo), len(wanted), len(todo))
    return done, done_keys, todo


def _load_data(cfg: DictConfig) -> tuple[DataSplits, DataSplits]:
    """The pretraining and the evaluation data, with every K checked against the smallest
    class before any pretraining (a bad K costs seconds, not a pretraining)."""
    eval_data_cfg = eval_data_config(cfg)
    with distributed.main_first():  # rank 0 decodes and caches image folders, the others read
        data = load_data(cfg.data)
        eval_data = data if eval_data_cfg is cfg.data else load_data(eval_data_cfg)
    if eval_data is not data:  # transfer: frozen layers see inputs normalised as in pretraining
        eval_data.mean, eval_data.std = data.mean, data.std
    for name, splits in (("data", data), ("eval data", eval_data)):
        log.info("%s: %s, %d train / %d test / %d unlabeled images of %s, %d classes", name,
                 splits.source, len(splits.train), len(splits.test), len(splits.unlabeled),
                 tuple(splits.train.images.shape[1:]), splits.num_classes)
    smallest = int(eval_data.train.class_counts().min())
    for key in ("labels_per_class", "probes.labels_per_class", "finetune.labels_per_class"):
        bad = [k for k in OmegaConf.select(cfg.eval, key) if not 0 < int(k) <= smallest]
        if bad:
            raise UserError(f"eval.{key} has {bad}, but each value must be in 1..{smallest} "
                            f"(the smallest class of {eval_data_cfg.name}'s train split)")
    return data, eval_data


def _evaluate(cfg: DictConfig, backbone: ConvBackbone, eval_data: DataSplits, device: torch.device,
              main_ks: list[int], done_keys: set, record: Callable[[dict], None]) -> None:
    """The protocol (frozen or from scratch) at the K values still to compute, then the probes."""
    seed = int(cfg.seed)
    record = with_test_set(record, eval_data)
    if cfg.task.evaluation == "scratch":
        evaluate_scratch(lambda s: build_backbone(cfg.backbone, s), eval_data, cfg.eval, seed,
                         device, cfg.channels_last, cfg.progress, ks=main_ks, on_result=record,
                         precision=cfg.precision)
    elif cfg.task.evaluation == "frozen":
        if cfg.eval.bn_recalibrate:  # before any frozen feature is computed: probes see it too
            recalibrate_batchnorm(backbone, eval_data.unlabeled, eval_data.mean, eval_data.std,
                                  device, int(cfg.eval.bn_recalibrate_images), cfg.eval.chunk_size)
        evaluate(backbone, eval_data, cfg.eval, seed, device, cfg.channels_last, cfg.progress,
                 ks=main_ks, on_result=record, precision=cfg.precision)
        for result in run_probes(backbone, eval_data, cfg.eval.probes,
                                 [int(k) for k in cfg.eval.probes.labels_per_class], seed, device,
                                 cfg.eval.chunk_size, skip=done_keys):
            record(result)
        if cfg.eval.finetune.enabled:
            finetune_ks = [int(k) for k in cfg.eval.finetune.labels_per_class
                           if (FINETUNE, int(k)) not in done_keys]
            evaluate_scratch(lambda s: trainable_copy(backbone), eval_data, cfg.eval, seed, device,
                             cfg.channels_last, cfg.progress, ks=finetune_ks, on_result=record,
                             precision=cfg.precision, protocol=FINETUNE)
    else:
        raise UserError(f"task.evaluation must be 'frozen' or 'scratch', got {cfg.task.evaluation!r}")


def with_test_set(record: Callable[[dict], None], eval_data: DataSplits) -> Callable[[dict], None]:
    """`record`, handed each result with the classes and the size of the test set it was
    measured on: what its chance level depends on (`RowWriter.at_chance`)."""
    facts = {"num_classes": eval_data.num_classes, "test_images": len(eval_data.test)}
    return lambda result: record({**facts, **result})


@dataclass
class RowWriter:
    """Turns each evaluation result into a leaderboard row and appends it at once (rank 0),
    so an interrupted run keeps every row it finished."""

    cfg: DictConfig
    run_id: str
    run_dir: Path
    leaderboard: Path
    pretext: PretrainResult | None
    reused: bool
    pretrain_folder: Path | None
    sha: str
    machine: str
    started_at: str
    writer: bool

    def row(self, result: dict) -> dict:
        cfg, pretext = self.cfg, self.pretext
        return {
            "run_id": self.run_id, "task": cfg.task.name, "dataset": eval_data_config(cfg).name,
            "pretrain_dataset": cfg.data.name, "backbone": backbone_name(cfg),
            "protocol": result.get("protocol", cfg.eval.protocol),
            "labels_per_class": result["labels_per_class"], "seed": int(cfg.seed),
            "test_acc": result["test_acc"],
            "pretext_metric": pretext.pretext_metric if pretext else None,
            "pretext_metric_name": pretext.metric_name if pretext else None,
            "pretrain_seconds": pretext.seconds if pretext else 0.0, "pretrain_reused": self.reused,
            "pretrain_id": self.pretrain_folder.name if self.pretrain_folder else None,
            "eval_seconds": result["eval_seconds"], "eval_steps": result["eval_steps"],
            "eval_samples": result.get("eval_samples"), "eval_augment": result.get("eval_augment"),
            "eval_budget_scale": result.get("eval_budget_scale"), "results_version": RESULTS_VERSION,
            "pretrain_seed": int(cfg.train.seed) if cfg.task.pretrain else None,
            "pretrain_epochs": pretext.epochs if pretext else 0, "precision": cfg.precision,
            "pretrain_precision": pretraining_precision(cfg) if cfg.task.pretrain else None,
            "profile": cfg.profile_name, "git_sha": self.sha, "machine": self.machine,
            "started_at": self.started_at,
            "finished_at": now_iso(), "run_dir": str(self.run_dir), "at_chance": self.at_chance(result),
        }

    def __post_init__(self) -> None:
        # a fresh pretraining warned as it ended (train.py); a reused one is warned about here
        if self.writer and self.reused and self.pretext_at_chance:
            warn_pretext_at_chance(self.pretext, self.pretrain_folder or Path("."),
                                   self.cfg.train.optimizer.lr)

    @property
    def pretext_at_chance(self) -> bool:
        return self.pretext is not None and self.pretext.at_chance()

    def accuracy_chance(self, result: dict) -> float | None:
        """Chance accuracy of the result's test set (None if its classes are not known)."""
        classes = result.get("num_classes")
        return chance_accuracy(int(classes)) if classes else None

    def at_chance(self, result: dict) -> str:
        """The row's `at_chance` value (`ssl_bench.chance.flag`): whether the pretraining's
        held-out metric, the row's test accuracy, both or neither are at chance level."""
        accuracy = at_chance(result["test_acc"], self.accuracy_chance(result), result.get("test_images"))
        return flag(self.pretext_at_chance, accuracy)

    def warn_accuracy_at_chance(self, result: dict) -> None:
        """One warning line: which run, protocol and K, the accuracy against chance, what it
        likely means and what to try."""
        protocol = result.get("protocol", self.cfg.eval.protocol)
        if self.pretext_at_chance:
            hint = "its pretraining is at chance too: fix that first (train.optimizer.lr, the data)"
        elif protocol in (self.cfg.eval.protocol, FINETUNE):
            hint = (f"try a lower eval.optimizer.lr (now {self.cfg.eval.optimizer.lr}) and check the data "
                    "and labels")
        else:
            hint = "the frozen features separate nothing here; check the data and labels"
        log.warning("run %s: %s K=%d test accuracy %s is at chance level: the network likely diverged or "
                    "learnt nothing (or K and the step budget are too small to learn from); %s",
                    self.run_id, protocol, int(result["labels_per_class"]),
                    describe(result["test_acc"], self.accuracy_chance(result), result.get("test_images")),
                    hint)

    def record(self, result: dict) -> None:
        if self.writer:
            row = self.row(result)
            if ACCURACY in row["at_chance"]:
                self.warn_accuracy_at_chance(result)
            append_rows(self.leaderboard, [row])
            # step = K: a protocol's chart is its accuracy against the labels per class
            logger.current().scalar(f"accuracy/{row['protocol']}", row["test_acc"],
                                    int(row["labels_per_class"]))
