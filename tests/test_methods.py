"""The one list of methods (`ssl_bench.methods`) and everything that must agree with it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from omegaconf import OmegaConf

from ssl_bench import perf
from ssl_bench.cli import CONF_DIR
from ssl_bench.methods import METHODS, OTHER_TASKS, PRETEXT_TASKS, pretrained_methods
from tests.conftest import PROJECT_ROOT


def test_every_task_config_is_a_method_and_every_method_has_one():
    configs = {p.stem for p in (Path(CONF_DIR) / "task").glob("*.yaml") if not p.stem.startswith("_")}
    assert configs == set(METHODS) | set(OTHER_TASKS) and not set(METHODS) & set(OTHER_TASKS)
    assert len(set(METHODS)) == len(METHODS)


def test_the_benchmark_sweeps_exactly_the_methods_in_order():
    sweep = OmegaConf.load(Path(CONF_DIR) / "experiment" / "benchmark.yaml").hydra.sweeper.params.task
    assert tuple(sweep.split(",")) == METHODS


def test_the_makefile_lists_come_from_the_benchmark():
    out = subprocess.run(["make", "-s", "--no-print-directory", "list-methods"], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    lists = dict(line.split("=", 1) for line in out)
    assert tuple(lists["TASKS"].split(",")) == METHODS
    assert tuple(lists["SMOKE_TASKS"].split(",")) == METHODS  # smoke covers every method


def test_perf_measures_the_single_pretext_tasks():
    assert perf.TASKS == PRETEXT_TASKS


def test_only_the_two_baselines_skip_pretraining():
    assert set(METHODS) - set(pretrained_methods()) == {"random", "supervised"}
