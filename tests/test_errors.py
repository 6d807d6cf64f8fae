"""Bad input: each case ends in one clear message on stderr, exit status != 0, no traceback.

Every case runs the real command (`python -m ssl_bench`) in a subprocess, as a user would,
and fails before any training, so each costs a few seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow  # every case starts the CLI in its own process


QUICK = ["profile=smoke", "progress=false", "eval.probes.enabled=false"]


def _cli(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssl_bench", *QUICK, f"paths.runs_dir={tmp_path / 'runs'}",
         f"paths.cache_dir={tmp_path / 'cache'}", *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, env=env)


def _assert_clear_error(res: subprocess.CompletedProcess, *fragments: str, status: int = 2) -> None:
    assert res.returncode == status, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    for fragment in fragments:
        assert fragment in res.stderr, (fragment, res.stderr[-3000:])


def _image_tree(root: Path, classes=("a", "b"), per_class=3, size=32) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png")
    return root


def _folder_args(root: Path, *extra: str) -> list[str]:
    return ["data=image_folder", f"data.root={root}", "eval.labels_per_class=[1,2]", *extra]


@pytest.mark.parametrize("override, listed", [
    ("task=rotatoin", "relative_position"), ("data=cifar11", "synthetic"),
    ("backbone=resnet", "small"), ("profile=gpu", "paper")])
def test_unknown_group_option_lists_the_valid_ones(tmp_path, override, listed):
    res = _cli(tmp_path, override)
    _assert_clear_error(res, override.split("=")[1], "Available options", listed, status=1)


def test_missing_data_root_says_how_to_get_the_data(tmp_path):
    res = _cli(tmp_path, f"data.root={tmp_path / 'nowhere'}")
    _assert_clear_error(res, "no cifar10 data set found", "data.root", "data.download=true")


def test_folder_without_a_data_set_is_named(tmp_path):
    (tmp_path / "junk").mkdir()
    res = _cli(tmp_path, "data=image_folder", f"data.root={tmp_path / 'junk'}")
    _assert_clear_error(res, "is not an image folder", "train/<class>")


def test_corrupt_file_is_named_and_can_be_skipped(tmp_path):
    root = _image_tree(tmp_path / "imgs")
    (root / "train" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    res = _cli(tmp_path, *_folder_args(root))
    _assert_clear_error(res, "broken.png", "delete or replace")
    res = _cli(tmp_path, *_folder_args(root, "data.skip_bad_files=true", "task=random"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "skipped 1 unreadable file(s)" in res.stdout + res.stderr


def test_truncated_image_is_named(tmp_path):
    root = _image_tree(tmp_path / "imgs")
    good = (root / "test" / "b" / "0.png").read_bytes()
    (root / "test" / "b" / "0.png").write_bytes(good[: len(good) // 2])
    _assert_clear_error(_cli(tmp_path, *_folder_args(root)), "0.png", "cannot decode")


def test_empty_class_folder_is_named(tmp_path):
    root = _image_tree(tmp_path / "imgs")
    (root / "train" / "c").mkdir()
    (root / "test" / "c").mkdir()
    _assert_clear_error(_cli(tmp_path, *_folder_args(root)), "holds no images", "/c")


def test_train_and_test_with_different_classes(tmp_path):
    root = _image_tree(tmp_path / "imgs")
    _image_tree(tmp_path / "extra", classes=("z",))
    (tmp_path / "extra" / "test" / "z").rename(root / "test" / "z")
    _assert_clear_error(_cli(tmp_path, *_folder_args(root)), "unexpected ['z']",
                        "must hold the same class folders")


@pytest.mark.parametrize("ks, fragment", [
    ("[5,1000]", "must be in 1.."),  # too many for the data set: known once it is loaded
    ("[0,5]", "eval.labels_per_class[0]=0 is not allowed: must be at least 1"),  # the schema
    ("[-3]", "eval.labels_per_class[0]=-3 is not allowed")])
def test_k_out_of_range(tmp_path, ks, fragment):
    res = _cli(tmp_path, "data=synthetic", f"eval.labels_per_class={ks}")
    _assert_clear_error(res, fragment)


@pytest.mark.parametrize("task, size, fragment", [
    ("jigsaw", 16, "task.module.grid"), ("relative_position", 12, "task.module.patch")])
def test_images_too_small_for_the_task(tmp_path, task, size, fragment):
    res = _cli(tmp_path, "data=synthetic", f"data.image_size={size}", f"task={task}")
    _assert_clear_error(res, fragment, "data.image_size")


def test_non_finite_loss_names_the_step_and_suggests_a_lower_lr(tmp_path):
    res = _cli(tmp_path, "data=synthetic", "task=rotation", "train.optimizer.lr=1e30")
    _assert_clear_error(res, "at step", "lower train.optimizer.lr")


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    res = _cli(tmp_path, "data=synthetic", f"paths.runs_dir={blocker / 'runs'}")
    _assert_clear_error(res, "cannot write to paths.runs_dir", "choose a writable folder")


@pytest.mark.parametrize("override, fragment", [
    ("eval.budget_scale=0", "eval.budget_scale=0 is not allowed: must be greater than 0"),
    ("precision=fp16", "precision='fp16' is not allowed: must be 'auto', 'fp32' or 'bf16'"),
])
def test_bad_budget_or_precision_is_refused_before_any_work(tmp_path, override, fragment):
    res = _cli(tmp_path, override)
    _assert_clear_error(res, fragment)
    assert not (tmp_path / "runs" / "pretrain").exists()  # nothing trained
    assert not (tmp_path / "runs" / "leaderboard.csv").exists()  # no rows


def buggy_backbone(**settings):
    """A stand-in for a programming error inside a target: a TypeError from its body."""
    return len(settings) + "one"  # the bug is the point


@pytest.mark.parametrize("override, fragments", [
    ("+task.module.num_rotatoins=4", ("task.module.num_rotatoins is not a setting", "angles")),
    ("task.module.angles=[0]", ("task.module.angles=[0] is not allowed: must have at least 2",)),
    ("train.schedule.name=linear", ("train.schedule.name='linear' is not allowed",
                                    "'cosine', 'step' or 'constant'"))])
def test_configuration_mistakes_are_messages(tmp_path, override, fragments):
    _assert_clear_error(_cli(tmp_path, "data=synthetic", "task=rotation", override), *fragments)


def test_a_bug_inside_a_target_keeps_its_traceback(tmp_path):
    """Only the user's mistakes become messages: a TypeError raised by code is not one. It
    ends as Hydra reports a failed job (exit 1, the exception named; the whole traceback with
    HYDRA_FULL_ERROR=1), never as our `ssl-bench: error:` line with exit status 2."""
    res = _cli(tmp_path, "data=synthetic", "task=random",
               "backbone._target_=tests.test_errors.buggy_backbone",
               env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert res.returncode not in (0, 2), res.stderr[-3000:]
    assert "Traceback" in res.stderr and "TypeError" in res.stderr, res.stderr[-3000:]
    assert "buggy_backbone" in res.stderr and "ssl-bench: error:" not in res.stderr


@pytest.mark.parametrize("sweep, fragment", [
    ("seed=0,abc", "seed='abc' is not allowed: must be a whole number"),
    ("eval.labels_per_class=[5],[0]", "eval.labels_per_class[0]=0 is not allowed"),
])
def test_a_sweep_with_one_bad_job_runs_none_of_them(tmp_path, sweep, fragment):
    """Every job of a sweep is checked before the first one starts: the good jobs do not
    run, and no sweep folder, cache or leaderboard is left behind."""
    res = subprocess.run(
        [sys.executable, "-m", "ssl_bench", "-m", *QUICK, "data=synthetic", sweep,
         f"paths.runs_dir={tmp_path / 'runs'}", f"paths.cache_dir={tmp_path / 'cache'}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    _assert_clear_error(res, fragment)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("command, fragment", [
    (["ssl-bench-show", "data=synthetic", "show.num_images=0"],
     "ssl-bench-show: error: show.num_images=0 is not allowed: must be at least 1"),
    (["ssl-bench-search", "data=synthetic", "search=smoke", "search.network.nodes=0"],
     "ssl-bench-search: error: search.network.nodes=0 is not allowed: must be at least 1"),
    (["ssl-bench-perf", "--quick", "--parts", "a", "train.batch_size=0"],
     "ssl-bench-perf: error: train.batch_size=0 is not allowed: must be at least 2"),
    (["ssl-bench-perf", "--quick", "--steps", "0"], "argument --steps: '0' is not a whole number >= 1"),
    (["ssl-bench-curve", "--tolerance", "-1"], "argument --tolerance: '-1' is not a number > 0"),
])
def test_every_command_checks_its_settings_first(tmp_path, command, fragment):
    """The installed commands, as a user types them (each names itself in its message)."""
    name, *args = command
    runs = [] if name in ("ssl-bench-perf", "ssl-bench-curve") else [f"paths.runs_dir={tmp_path / 'runs'}"]
    res = subprocess.run([str(Path(sys.executable).parent / name), *args, *runs], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    _assert_clear_error(res, fragment)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("damage, fragment", [
    ("folder", "is a folder, not a leaderboard CSV"),
    ("text-in-K", "line 2, column labels_per_class: 'twenty' is not a whole number"),
])
def test_a_leaderboard_that_cannot_take_rows_is_found_before_any_work(tmp_path, damage, fragment):
    board = tmp_path / "board.csv"
    if damage == "folder":
        board.mkdir()
    else:
        board.write_text("run_id,task,dataset,backbone,protocol,labels_per_class,seed,test_acc\n"
                         "r,rotation,cifar10,small,conv3_linear,twenty,0,50.0\n")
    before = board.read_bytes() if board.is_file() else None
    res = _cli(tmp_path, "data=synthetic", f"leaderboard.path={board}")
    _assert_clear_error(res, fragment)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.yaml"))
    assert before is None or board.read_bytes() == before
