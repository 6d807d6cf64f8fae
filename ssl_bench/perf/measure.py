"""The measurements (a-g of the package docstring): each adds rows to a `Recorder`."""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset
from torch.utils.flop_counter import FlopCounterMode

from ssl_bench.data import load_data
from ssl_bench.data.imageset import DataSplits
from ssl_bench.data.subsets import balanced_subset
from ssl_bench.device import autocast
from ssl_bench.evaluate import evaluate, num_steps
from ssl_bench.perf.conventional import PretextDataset, conventional_batches, conventional_transform
from ssl_bench.perf.results import Recorder
from ssl_bench.perf.steps import (
    PRETRAIN_GOALS,
    SEED,
    OurBatches,
    Trainer,
    build_task,
    compose_config,
    make_backbone,
)
from ssl_bench.perf.timing import max_rss, reset_max_rss, rss_now, sync, timed


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
        task.per_sample_labels())
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

    The training loop's time is the one the real `evaluate` call reports for it
    (`eval_train_seconds`); the whole call (test features, cache build, training, test
    accuracy) is timed too.
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
    sync(device)
    t0 = time.perf_counter()
    result = evaluate(backbone, data, eval_cfg, SEED, device, cfg.channels_last, progress=False,
                      ks=[k], precision=cfg.precision)[0]
    sync(device)  # the training loop's own time comes with the result (`eval_train_seconds`)
    return steps / result["eval_train_seconds"], result["test_acc"], time.perf_counter() - t0


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
    before = rss_now() or max_rss()
    reset = reset_max_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cfg = OmegaConf.merge(OmegaConf.create(eval_cfg), {"feature_cache": True, "min_steps": 1, "max_steps": 1})
    evaluate(backbone, data, cfg, SEED, device, channels_last, progress=False, ks=[k])
    images = len(balanced_subset(data.train.labels, k, SEED))
    return {"k": k, "images": images, "before": before, "peak": max_rss(), "reset": float(reset),
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
