"""Chance-level results: the rule, each task's chance level, and a run that learns nothing."""

from __future__ import annotations

import logging
import math

import pandas as pd
import pytest

from ssl_bench.chance import at_chance, chance_accuracy, flag, flagged, margin
from ssl_bench.leaderboard import format_summary, read
from ssl_bench.report import render_markdown
from ssl_bench.run import build_backbone, run
from ssl_bench.tasks import build_task

# one K and one probe keep a smoke run to a few seconds
QUICK = ["profile=smoke", "data=synthetic", "task=rotation", "eval.labels_per_class=[20]",
         "eval.probes.linear_stages=[conv2]", "eval.probes.knn_stages=[]", "eval.probes.cosine_knn.stages=[]"]
# the head, the backbone and the evaluator's classifier hardly move: finite, learns nothing
NOTHING_LEARNT = ["task.train_lr=1e-12", "eval.optimizer.lr=1e-12"]  # lr=0 is refused: > 0


def test_chance_accuracy_is_one_over_the_classes():
    assert chance_accuracy(10) == pytest.approx(10.0)
    assert chance_accuracy(4) == pytest.approx(25.0)
    with pytest.raises(ValueError):
        chance_accuracy(0)


def test_margin_is_three_standard_errors_but_at_least_two_points():
    assert margin(10.0, 10_000) == pytest.approx(2.0)  # 3 SE = 0.9 point: the floor holds
    assert margin(10.0, 500) == pytest.approx(3 * 100 * math.sqrt(0.1 * 0.9 / 500))  # 4.02
    assert margin(10.0, None) == pytest.approx(2.0)


@pytest.mark.parametrize("value, chance, samples, expected", [
    (10.9, 10.0, 10_000, True),    # the diverged searched network of the search reference
    (11.3, 10.0, 10_000, True),
    (13.4, 10.0, 500, True),       # within 4.02 points on 500 test images
    (0.5, 1.0, 200, True),         # below chance is no better
    (25.3, 25.0, 2_000, True),     # its rotation pretext metric
    (24.7, 10.0, 10_000, False),   # the weakest learnt row of the same reference
    (15.0, 10.0, 500, False),
    (99.0, 25.0, 200, False),
    (10.0, None, 500, False),      # a loss has no chance level
    (math.nan, 10.0, 500, False),
])
def test_at_chance(value, chance, samples, expected):
    assert at_chance(value, chance, samples) is expected


def test_flag_values_and_which_cells_mark_a_row():
    assert [flag(False, False), flag(True, False), flag(False, True), flag(True, True)] == [
        "no", "pretext", "accuracy", "pretext+accuracy"]
    cells = pd.Series(["no", "", None, float("nan"), "pretext", "accuracy", "pretext+accuracy"])
    assert flagged(cells).tolist() == [False, False, False, False, True, True, True]


@pytest.mark.parametrize("task, expected", [
    ("rotation", 25.0), ("jigsaw", 1.0), ("relative_position", 12.5), ("supervised_pretrain", 10.0),
    ("multitask", 25.0), ("inpainting", None), ("layerwise", None)])
def test_each_task_says_its_chance_level(make_cfg, tiny_data, task, expected):
    cfg = make_cfg("data=synthetic", f"task={task}")
    level = build_task(cfg.task.module, build_backbone(cfg.backbone, 0), tiny_data).chance_level
    assert level == (None if expected is None else pytest.approx(expected))


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_run_that_learns_nothing_is_flagged_logged_and_marked(make_cfg, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    cfg = make_cfg(*QUICK, *NOTHING_LEARNT)
    rows = {r["protocol"]: r for r in run(cfg, tmp_path / "run")}
    # the linear probe reads the random backbone well above chance: flagged for its pretraining
    assert rows["conv3_linear"]["at_chance"] == "pretext+accuracy"
    assert rows["linear_probe_conv2"]["at_chance"] == "pretext"
    warnings = _warnings(caplog)
    assert any("ended at chance level" in w and "held-out accuracy" in w and "train.optimizer.lr" in w
               for w in warnings), warnings
    assert any(rows["conv3_linear"]["run_id"] in w and "conv3_linear K=20 test accuracy" in w
               and "at chance level" in w for w in warnings), warnings
    assert all("\n" not in w for w in warnings)

    table = read(cfg.leaderboard.path)
    assert set(table["at_chance"]) == {"pretext+accuracy", "pretext"}
    md = render_markdown(table)
    overview = md[md.index("## Overview"):md.index("## Paired differences")]
    assert "†" in overview and "† = at chance level" in md
    assert "!" in format_summary(table)

    # a later run reusing that pretraining warns again, and flags its rows
    caplog.clear()
    again = run(make_cfg(*QUICK, *NOTHING_LEARNT, "seed=1", "train.seed=0"), tmp_path / "again")
    assert again[0]["pretrain_reused"] and {r["at_chance"] for r in again} >= {"pretext"}
    assert any("ended at chance level" in w for w in _warnings(caplog))


def test_a_run_that_learns_is_not_flagged(make_cfg, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    cfg = make_cfg(*QUICK)
    rows = run(cfg, tmp_path / "run")
    assert [r["at_chance"] for r in rows] == ["no", "no"]
    assert not [w for w in _warnings(caplog) if "chance" in w]
    table = read(cfg.leaderboard.path)
    assert "†" not in render_markdown(table) and "!" not in format_summary(table)
