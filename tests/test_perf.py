"""`ssl-bench-perf --quick`: every measurement is produced, and both pipelines feed the same model."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from ssl_bench import perf
from ssl_bench.data.sources import load_synthetic

PER_TASK = ["batch_build_ms", "train_step_ms", "batch_build_fraction",  # (a)
            "batchgen_ours_images_per_s", "batchgen_conventional_images_per_s", "batchgen_speedup",  # (b)
            "pretrain_ours_images_per_s", "pretrain_conventional_images_per_s", "pretrain_speedup"]
GLOBAL = ["eval_steps_per_s_cached", "eval_steps_per_s_recompute", "eval_speedup",  # (c)
          "eval_seconds_cached", "eval_seconds_recompute", "eval_test_acc_cached",
          "eval_test_acc_recompute",
          "matmul_gflops", "backbone_gflop_per_step", "backbone_train_gflops",  # (d)
          "backbone_flop_utilisation",
          "eval_cache_images", "eval_cache_theoretical_mb", "eval_rss_before_eval_mb",  # (e)
          "eval_peak_rss_mb", "eval_peak_rss_increase_mb",
          "matmul_gflops_fp32", "matmul_gflops_bf16", "precision_auto_is_bf16",  # (f)
          "precision_fp32_images_per_s", "precision_bf16_images_per_s", "precision_bf16_speedup",
          "jobs_one_process_images_per_s", "jobs_parallel_images_per_s", "jobs_parallel_speedup"]  # (g)
# tiny data: the evaluator may not raise the mark; a CPU without native bf16: auto is fp32
MAY_BE_ZERO = {"eval_peak_rss_increase_mb", "precision_auto_is_bf16"}


@pytest.mark.slow  # every perf measurement, run twice (40 s on a 2-core Zen 3)
def test_quick_run_writes_every_measurement(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "perf.csv"
    threads = torch.get_num_threads()
    try:  # one thread: tiny batches gain nothing from more, and a busy machine costs less
        perf.main(["--quick", "--device", "cpu", "--data-root", str(tmp_path / "nonexistent"),
                   "--out", str(out), f"paths.cache_dir={tmp_path / 'cache'}", "threads=1"])
    finally:
        torch.set_num_threads(threads)
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == ["name", "task", "value", "unit", "goal", "met"]
    found = {(r["name"], r["task"]): r for r in rows}
    wanted = [(name, task) for task in perf.TASKS for name in PER_TASK]
    names = {r["name"] for r in rows}
    assert not [w for w in wanted if w not in found], "missing per-task measurements"
    assert not [n for n in GLOBAL if n not in names], "missing global measurements"
    for r in rows:
        value = float(r["value"])
        assert math.isfinite(value), r
        assert value >= 0 if r["name"] in MAY_BE_ZERO else value > 0, r
        if r["goal"]:
            assert r["met"] in ("yes", "no"), r
    assert found[("pretrain_speedup", "jigsaw")]["goal"] == ">= 3"

    printed = capsys.readouterr().out
    md = out.with_suffix(".md").read_text()
    for text in (printed, md):
        assert "| measurement | task | value | unit | goal | met |" in text
        assert "batch_build_fraction" in text and "eval_peak_rss_mb" in text
        assert "synthetic" in text  # the fallback is said, not hidden
    assert "--quick" in md


@pytest.mark.parametrize("name", perf.TASKS)
def test_conventional_batches_fit_the_same_model(name: str, tmp_path: Path) -> None:
    """The conventional pipeline's batches have our batches' shapes, dtypes and target ranges,
    and the task's own forward and loss accept them."""
    data = load_synthetic("synthetic", num_train=64, num_test=32, image_size=32, seed=0)
    cfg = perf.compose_config(["data=synthetic", f"task={name}", f"paths.cache_dir={tmp_path}"])
    device = torch.device("cpu")
    backbone, task = perf.build_task(cfg, data, device)
    ours_inputs, ours_targets = perf.OurBatches(data.unlabeled, data, task, cfg, 8, device)()
    base, _ = perf.conventional_images(data, tmp_path / "nonexistent", "auto")
    aug = cfg.train.augment
    dataset = perf.PretextDataset(base, perf.conventional_transform(
        32, int(aug.crop_padding), bool(aug.flip), data.mean, data.std), task.per_sample_labels())
    with perf.conventional_batches(dataset, 8, 0, device) as next_batch:
        inputs, targets = next_batch()
    assert inputs.shape == ours_inputs.shape and inputs.dtype == ours_inputs.dtype
    assert targets.shape == ours_targets.shape and targets.dtype == ours_targets.dtype
    outputs = task(backbone, inputs)
    if targets.dtype == torch.long:  # class indices within the head's classes
        assert 0 <= int(targets.min()) and int(targets.max()) < outputs.shape[1]
    else:  # inpainting: (image, mask) with a binary mask
        assert set(targets[:, -1].unique().tolist()) <= {0.0, 1.0}
    assert torch.isfinite(task.loss(outputs, targets))


@pytest.mark.parametrize("name", perf.TASKS)
def test_conventional_pseudo_labels_match_ours_without_randomness(name: str, tmp_path: Path) -> None:
    """With jitter, layout shifts, crops, flips and colour dropping off, a conventional sample is exactly what
    our batched `make_batch` makes of the same image for the same pseudo-label."""
    from ssl_bench.data.augment import to_float
    from ssl_bench.tasks.patches import cut_patches, normalize_each, resize_patches
    from ssl_bench.tasks.relative_position import OFFSETS

    off = {"jigsaw": ["task.module.jitter=0", "task.module.origin_shifts=1"],
           "relative_position": ["task.module.jitter=0", "task.module.color_dropping=false",
                                 "task.module.origin_shifts=1"]}
    data = load_synthetic("synthetic", num_train=16, num_test=8, image_size=32, seed=0)
    cfg = perf.compose_config(["data=synthetic", f"task={name}", f"paths.cache_dir={tmp_path}",
                               *off.get(name, [])])
    _, task = perf.build_task(cfg, data, torch.device("cpu"))
    base, _ = perf.conventional_images(data, tmp_path / "nonexistent", "memory")
    transform = perf.conventional_transform(32, 0, False, data.mean, data.std)
    label = task.per_sample_labels()
    x = to_float(data.unlabeled[:4], data.mean, data.std)
    torch.manual_seed(0)
    samples = [label(transform(base[i])) for i in range(4)]
    for i, (inputs, target) in enumerate(samples):
        assert torch.allclose(transform(base[i]), x[i], atol=1e-5)  # same normalisation
        if name == "rotation":
            ours, ours_targets = task.make_batch(x[i:i + 1], torch.Generator())
            assert torch.equal(inputs, ours) and torch.equal(target, ours_targets)
        elif name == "inpainting":
            ours, ours_targets = task.make_batch(x[i:i + 1], torch.Generator())
            assert torch.allclose(inputs, ours[0], atol=1e-5)
            assert torch.allclose(target, ours_targets[0], atol=1e-5)
        elif name == "jigsaw":  # ours, unshuffled to grid order, vs this sample unshuffled
            ours, ours_targets = task.make_batch(x[i:i + 1], torch.Generator().manual_seed(i))
            grid = task.unshuffle(ours.view(1, task.num_tiles, *ours.shape[1:]), ours_targets)
            mine = task.unshuffle(inputs[None], torch.tensor([target]))
            assert torch.allclose(grid, mine, atol=1e-5)
        else:  # relative position: the centre and the neighbour `target` names, cut our way
            dr, dc = OFFSETS[target]
            stride = task.patch + task.gap
            top = torch.tensor([[1, 1 + dr]]) * stride + task.origin
            left = torch.tensor([[1, 1 + dc]]) * stride + task.origin
            ours = resize_patches(normalize_each(cut_patches(x[i:i + 1], top, left, task.patch)),
                                  task.input_size)[0]
            assert torch.allclose(inputs, ours, atol=1e-5)
