"""Data-parallel runs under torchrun: results independent of the number of processes.

The end-to-end test starts real processes (`torchrun --standalone`, gloo on CPU) on the
same synthetic data, seed and command line, once with one process and once with two,
and compares what they wrote. Tolerances: the two runs sum the same numbers in another
order (gradient all-reduce, BatchNorm statistics from per-process sums), so losses agree
to about 1e-5 relative and weights to about 1e-4 after a few SGD steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from ssl_bench import distributed
from ssl_bench.distributed import Context, shard
from ssl_bench.errors import UserError

LOSS_RTOL = 1e-4
WEIGHT_ATOL = 2e-3


def test_shard_keeps_inputs_and_targets_aligned_for_any_row_layout():
    images = 7
    # rotation-like: 4 rows per image; jigsaw-like: 9 tile rows per image, one target per image
    inputs = {"rot": torch.arange(4 * images), "tiles": torch.arange(9 * images).view(-1, 1)}
    targets = {"rot": torch.arange(4 * images) * 10, "tiles": torch.arange(images)}
    parts = [shard(inputs, targets, images, Context(rank=r, world=3)) for r in range(3)]
    # the slices partition the global batch, in order
    assert torch.equal(torch.cat([p.inputs["rot"] for p in parts]), inputs["rot"])
    assert torch.equal(torch.cat([p.targets["tiles"] for p in parts]), targets["tiles"])
    for p in parts:  # each image's tiles travel with its target
        assert torch.equal(p.inputs["tiles"].view(-1, 9)[:, 0] // 9, p.targets["tiles"])
        assert torch.equal(p.inputs["rot"] * 10, p.targets["rot"])
    # uneven slices (3, 2, 2 images) are weighted so the mean of scaled losses is the global mean
    sizes = [len(p.targets["tiles"]) for p in parts]
    assert sorted(sizes) == [2, 2, 3]
    assert [p.scale for p in parts] == pytest.approx([3 * n / images for n in sizes])


def test_shard_is_a_no_op_alone_and_refuses_too_small_batches():
    x, y = torch.randn(5, 3), torch.arange(5)
    alone = shard(x, y, 5, Context())
    assert alone.inputs is x and alone.targets is y and alone.scale == 1.0
    with pytest.raises(UserError, match="cannot be split between 4 processes"):
        shard(x[:3], y[:3], 3, Context(rank=0, world=4))
    with pytest.raises(ValueError, match="not a multiple"):
        shard(torch.randn(7, 2), y, 5, Context(rank=0, world=2))


def test_single_process_leaves_batchnorm_and_modules_untouched():
    bn = torch.nn.BatchNorm2d(3)
    with distributed.synced_batchnorm(bn):
        assert type(bn) is torch.nn.BatchNorm2d
    assert distributed.data_parallel(bn, torch.device("cpu")) is bn
    assert distributed.hydra_overrides_for_rank() == []


def _run(tmp: Path, processes: int, *overrides: str) -> Path:
    runs = tmp / f"n{processes}"
    args = ["profile=smoke", "data=synthetic", "task=rotation", "progress=false",
            "train.epochs=4", "train.steps_per_epoch=1", "train.batch_size=63",
            "eval.probes.enabled=false", "eval.batch_size=25", f"paths.runs_dir={runs}",
            # fp32: the claim is that N processes compute the same sums as one; bf16 would
            # round slices of different sizes differently on a CPU that has it (precision=auto)
            "precision=fp32",
            f"paths.cache_dir={tmp / 'cache'}", *overrides]
    if processes == 1:
        command = [sys.executable, "-m", "ssl_bench", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={processes}", "-m", "ssl_bench", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return runs


def _pretraining(runs: Path) -> tuple[list[dict], dict]:
    [folder] = (runs / "pretrain").iterdir()
    lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    return [x for x in lines if "epoch" in x], {**state["backbone"], **{
        f"task.{k}": v for k, v in state["task"].items()}}


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    one, two = _run(tmp_path, 1), _run(tmp_path, 2)
    epochs_1, weights_1 = _pretraining(one)
    epochs_2, weights_2 = _pretraining(two)

    # same pretraining identity (the process count is not part of it with synced BatchNorm)
    assert [p.name for p in (one / "pretrain").iterdir()] == [p.name for p in (two / "pretrain").iterdir()]
    # per-step losses (one step per epoch here) agree
    assert [e["step"] for e in epochs_2] == [1, 2, 3, 4]
    assert [e["processes"] for e in epochs_2] == [2] * 4
    losses_1 = torch.tensor([e["loss"] for e in epochs_1])
    losses_2 = torch.tensor([e["loss"] for e in epochs_2])
    assert torch.allclose(losses_1, losses_2, rtol=LOSS_RTOL, atol=0), (losses_1, losses_2)
    assert losses_2[-1] < losses_2[0]  # and they trained
    # saved weights (backbone, task head, BatchNorm statistics) agree
    assert weights_1.keys() == weights_2.keys()
    for key, value in weights_1.items():
        assert torch.allclose(value.float(), weights_2[key].float(), rtol=0, atol=WEIGHT_ATOL), key

    # rank 0 alone wrote rows: exactly one per K, with accuracies that agree
    board_1, board_2 = pd.read_csv(one / "leaderboard.csv"), pd.read_csv(two / "leaderboard.csv")
    assert sorted(board_2.labels_per_class) == [5, 20]
    assert board_2.run_id.nunique() == 1 and board_2.run_id[0] == board_1.run_id[0]
    merged = board_1.merge(board_2, on="labels_per_class")
    assert (merged.test_acc_x - merged.test_acc_y).abs().max() <= 1.0
    # one run folder, rank 0's
    assert len([p for p in (two / "rotation").iterdir()]) == 1


def test_process_count_enters_the_pretraining_identity_only_without_synced_batchnorm(make_cfg):
    from ssl_bench.run import pretrain_dir

    cfg = make_cfg("data=synthetic", "profile=smoke")
    alone = pretrain_dir(cfg, Context())
    # synced: 4 processes reuse (and give) the same pretraining
    assert pretrain_dir(cfg, Context(rank=0, world=4, sync_batchnorm=True)) == alone
    assert pretrain_dir(cfg, Context(rank=0, world=4, sync_batchnorm=False)) != alone
