"""End to end through the real Hydra config: compose API in-process, and the CLI itself."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra.errors import ConfigCompositionException

from ssl_bench.errors import UserError
from ssl_bench.leaderboard import COLUMNS
from ssl_bench.methods import METHODS, PRETEXT_TASKS, pretrained_methods
from ssl_bench.run import run
from tests.conftest import PROJECT_ROOT

PRETRAINED = list(pretrained_methods())
ARTEFACTS = {"jigsaw": "permutations.json", "inpainting": "inpainting_examples.png",
             "multitask_all": "inpainting_examples.png"}
METRICS = {"inpainting": "masked_mse", "layerwise": "recon_mse", "multitask": "rotation_accuracy",
           "multitask_all": "rotation_accuracy"}
EPOCHS = {"layerwise": [1, 2, 3, 4, None]}  # two stages of two epochs each


# rotation stays in the fast tier; the other methods (6-17 s each) run in the slow one
@pytest.mark.parametrize("task", [m if m == "rotation" else pytest.param(m, marks=pytest.mark.slow)
                                  for m in METHODS])
def test_composed_config_runs_end_to_end(make_cfg, tmp_path, task):
    cfg = make_cfg("profile=smoke", "data=synthetic", f"task={task}", "seed=1")
    run_dir = tmp_path / "run"
    rows = run(cfg, run_dir)
    table = pd.read_csv(cfg.leaderboard.path)
    assert list(table.columns) == COLUMNS
    probes = 0 if task == "supervised" else 7  # 3 linear probes + 2 + 2 k-NN on the frozen backbone
    assert len(table) == 2 * (1 + probes) and len(rows) == len(table)
    assert sorted(table[table.protocol == "conv3_linear"].labels_per_class) == [5, 20]
    assert set(table.task) == {task} and set(table.seed) == {1}
    assert set(table.dataset) == {"synthetic"} and set(table.backbone) == {"small"}
    assert table.test_acc.between(0, 100).all()
    assert table.run_id.nunique() == 1 and rows[0]["run_id"] == table.run_id[0]
    for name in ("config.yaml", "meta.json", "results.json"):
        assert (run_dir / name).is_file()
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["seed"] == 1 and meta["git_sha"] and meta["finished_at"]
    if task in PRETRAINED:
        pretrain_dir = Path(cfg.paths.runs_dir) / "pretrain" / rows[0]["pretrain_id"]
        assert (pretrain_dir / "checkpoint.pt").is_file() and (pretrain_dir / "pretrain.json").is_file()
        done = json.loads((pretrain_dir / "pretrain.json").read_text())  # what its seconds ran on
        assert done["machine"] == table.machine[0] and done["precision"] == table.pretrain_precision[0]
        run_dir = pretrain_dir  # where the pretraining's own files are
        assert table.pretext_metric.notna().all()
        assert set(table.pretext_metric_name) == {METRICS.get(task, "accuracy")}
        lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [x.get("epoch") for x in lines] == EPOCHS.get(task, [1, 2, None])  # then held-out
        assert f"test_{METRICS.get(task, 'accuracy')}" in lines[-1]
        if task in ARTEFACTS:
            assert (run_dir / ARTEFACTS[task]).stat().st_size > 0
    else:
        assert not (Path(cfg.paths.runs_dir) / "pretrain").exists()
        assert table.pretext_metric.isna().all()


@pytest.mark.parametrize("task", PRETEXT_TASKS)
def test_show_renders_every_task(make_cfg, tmp_path, task):
    from ssl_bench.show import show

    cfg = make_cfg("data=synthetic", "data.num_train=100", f"task={task}", "show.num_images=3")
    path = show(cfg)
    assert path == tmp_path / "runs" / "show" / f"{task}.png"
    from PIL import Image

    with Image.open(path) as im:
        assert im.size[0] > 200 and im.size[1] > 200


def test_k_larger_than_a_class_fails_before_pretraining(make_cfg, tmp_path):
    cfg = make_cfg("profile=smoke", "data=synthetic", "eval.labels_per_class=[5,1000]")
    with pytest.raises(UserError, match=r"1\.\.100"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_override_typo_is_an_error(make_cfg):
    with pytest.raises(ConfigCompositionException, match="tsak"):
        make_cfg("tsak=rotation")
    with pytest.raises(ConfigCompositionException, match="epochz"):
        make_cfg("train.epochz=3")


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "ssl_bench", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # five CLI processes
def test_cli_typo_and_unknown_task_exit_nonzero_with_a_clear_message(tmp_path):
    res = _cli("tsak=rotation", cwd=tmp_path)
    assert res.returncode != 0
    assert "tsak" in res.stderr and "Traceback" not in res.stderr
    res = _cli("task=rotatoin", cwd=tmp_path)
    assert res.returncode != 0
    assert "rotatoin" in res.stderr and "rotation" in res.stderr  # lists the valid ones


@pytest.mark.slow
def test_cli_sweep_writes_one_row_per_run_and_k(tmp_path):
    res = _cli("-m", "task=random", "seed=0,1", "profile=smoke", "data=synthetic",
               "progress=false", f"paths.runs_dir={tmp_path / 'runs'}",
               f"paths.cache_dir={tmp_path / 'cache'}", cwd=PROJECT_ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    table = pd.read_csv(tmp_path / "runs" / "leaderboard.csv")
    assert len(table) == 4 * 8  # 2 runs x 2 K x (conv3_linear + 3 linear probes + 2 + 2 k-NN)
    main = table[table.protocol == "conv3_linear"]
    assert sorted(zip(main.seed, main.labels_per_class)) == [(0, 5), (0, 20), (1, 5), (1, 20)]
    assert table.run_id.nunique() == 2
    assert len(list((tmp_path / "runs" / "multirun").glob("*/*/results.json"))) == 2


def test_cli_bad_data_root_is_one_clear_line(tmp_path):
    res = _cli("profile=smoke", f"data.root={tmp_path / 'missing'}", "progress=false",
               f"paths.runs_dir={tmp_path / 'runs'}", cwd=PROJECT_ROOT)
    assert res.returncode == 2
    assert "no cifar10 data set found" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow  # two whole runs
def test_same_seed_and_config_give_identical_results(make_cfg, tmp_path):
    # separate output folders: with a shared one the second run would just read the first's rows
    first = run(make_cfg("profile=smoke", "data=synthetic", "task=inpainting", "seed=3",
                         f"paths.runs_dir={tmp_path / 'a'}"), tmp_path / "a" / "run")
    second = run(make_cfg("profile=smoke", "data=synthetic", "task=inpainting", "seed=3",
                          f"paths.runs_dir={tmp_path / 'b'}"), tmp_path / "b" / "run")
    assert not first[0].get("pretrain_reused") and not second[0].get("pretrain_reused")
    varying = {"pretrain_seconds", "eval_seconds", "started_at", "finished_at", "run_dir"}

    def stable(rows: list[dict]) -> list[str]:  # rows as text, minus times and folders
        return sorted(repr(sorted((k, v) for k, v in r.items() if k not in varying)) for r in rows)

    assert len(first) == len(second) > 2
    assert stable(first) == stable(second)
