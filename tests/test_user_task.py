"""A pretext task of the user's own, outside the repository, found through `hydra.searchpath`.

The files run here are the README's example (examples/user_task/), copied out of the
checkout, so the documented example cannot rot: its module on the import path, its
`task/vflip.yaml` on the search path, `_base` taken from ssl_bench's own task group.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from ssl_bench.cli import OutputCheck
from ssl_bench.errors import UserError, instantiate
from ssl_bench.schema import validate
from ssl_bench.tasks import PretextTask, build_task
from tests.conftest import PROJECT_ROOT

EXAMPLE = PROJECT_ROOT / "examples" / "user_task"


@pytest.fixture
def user_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example copied to tmp_path/user_task, its module importable in this process."""
    folder = tmp_path / "user_task"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "my_tasks", raising=False)  # and dropped again afterwards
    return folder


def _search_path(folder: Path) -> str:
    return f"hydra.searchpath=[file://{folder / 'conf'}]"


def test_the_users_task_composes_with_the_packages_base_and_trains(make_cfg, user_task, tiny_data):
    cfg = make_cfg(_search_path(user_task), "task=vflip", "profile=smoke", "data=synthetic")
    # the common keys come from ssl_bench's task/_base.yaml, found from the user's folder
    assert cfg.task.name == "vflip" and cfg.task.module._target_ == "my_tasks.VerticalFlipTask"
    assert cfg.task.train_lr == 0.1 and cfg.task.crop_padding == 4 and cfg.task.evaluation == "frozen"
    validate(cfg)  # an unknown _target_ is accepted by the schema
    OutputCheck().on_run_start(cfg)  # the CLI's check before any folder: no exit

    backbone = instantiate(cfg.backbone)
    task = build_task(cfg.task.module, backbone, tiny_data)
    assert isinstance(task, PretextTask) and type(task).__module__ == "my_tasks"
    images = tiny_data.train.images[:8].float() / 255
    inputs, targets = task.make_batch(images, torch.Generator().manual_seed(0))
    assert inputs.shape == (16, *images.shape[1:]) and targets.tolist() == [0] * 8 + [1] * 8
    assert torch.equal(inputs[8:], images.flip(2))  # the second copy is upside down
    loss = task.loss(task(backbone, inputs), targets)
    loss.backward()
    assert torch.isfinite(loss) and task.head.weight.grad is not None
    assert task.chance_level == 50.0


def test_the_users_task_draws_its_flips_from_the_generator(make_cfg, user_task, tiny_data):
    cfg = make_cfg(_search_path(user_task), "task=vflip", "task.module.both_ways=false")
    task = build_task(cfg.task.module, instantiate(cfg.backbone), tiny_data)
    images = tiny_data.train.images[:64].float() / 255
    first = task.make_batch(images, torch.Generator().manual_seed(3))
    again = task.make_batch(images, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # a seeded pretraining repeats
    inputs, targets = first
    assert len(inputs) == 64 and 0 < int(targets.sum()) < 64
    flipped = targets.bool()
    assert torch.equal(inputs[flipped], images[flipped].flip(2))
    assert torch.equal(inputs[~flipped], images[~flipped])


def test_the_schema_checks_the_common_keys_and_the_argument_names_not_the_values(make_cfg, user_task,
                                                                                 tiny_data):
    with pytest.raises(UserError, match=r"task\.evaluation='both' is not allowed"):
        validate(make_cfg(_search_path(user_task), "task=vflip", "task.evaluation=both"))
    with pytest.raises(UserError, match="my_tasks.VerticalFlipTask has no setting both_wayz"):
        build_task(make_cfg(_search_path(user_task), "task=vflip", "+task.module.both_wayz=1").task.module,
                   instantiate(make_cfg().backbone), tiny_data)
    validate(make_cfg(_search_path(user_task), "task=vflip", "task.module.both_ways=7"))  # the task's own


def test_a_target_that_does_not_import_is_one_line_before_any_work(make_cfg, user_task, monkeypatch):
    with pytest.raises(UserError, match=r"'my_tasks\.Nope' cannot be imported: my_tasks has no 'Nope'"):
        validate(make_cfg(_search_path(user_task), "task=vflip", "task.module._target_=my_tasks.Nope"))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(user_task)])
    monkeypatch.delitem(sys.modules, "my_tasks")  # imported by the check above
    with pytest.raises(UserError, match="there is no module 'my_tasks'; put the folder that holds it on "
                                        "PYTHONPATH"):
        validate(make_cfg(_search_path(user_task), "task=vflip"))


def _cli(user_task: Path, cwd: Path, *args: str, importable: bool = True) -> subprocess.CompletedProcess:
    """`python -m ssl_bench` from `cwd` (outside the checkout), as the README's command line."""
    cwd.mkdir(exist_ok=True)
    path = [str(user_task)] if importable else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(PROJECT_ROOT)])}
    env.pop("SSL_BENCH_CACHE", None)
    return subprocess.run([sys.executable, "-m", "ssl_bench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_users_task_runs_end_to_end_from_the_command_line(user_task, tmp_path):
    work = tmp_path / "work"
    res = _cli(user_task, work, _search_path(user_task), "task=vflip", "profile=smoke", "data=synthetic",
               "progress=false")
    assert res.returncode == 0, res.stderr[-3000:]
    table = pd.read_csv(work / "runs" / "leaderboard.csv")
    assert set(table.task) == {"vflip"}
    assert sorted(table[table.protocol == "conv3_linear"].labels_per_class) == [5, 20]
    assert table.pretext_metric.notna().all() and set(table.pretext_metric_name) == {"accuracy"}
    assert [p.name.split("_")[0] for p in (work / "runs" / "pretrain").iterdir()] == ["vflip"]


@pytest.mark.slow
def test_a_sweep_checks_the_users_task_before_any_job(user_task, tmp_path):
    """The sweep's check composes every job with the search path: the vflip job, whose module
    is not importable, stops the sweep before the rotation job runs, in one line."""
    work = tmp_path / "work"
    res = _cli(user_task, work, "-m", _search_path(user_task), "task=rotation,vflip", "profile=smoke",
               "data=synthetic", importable=False)
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.strip().splitlines() == [
        "ssl-bench: error: task.module._target_='my_tasks.VerticalFlipTask' cannot be imported: there is "
        "no module 'my_tasks'; put the folder that holds it on PYTHONPATH"]
    assert not (work / "runs").exists()
