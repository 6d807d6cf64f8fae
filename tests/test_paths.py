"""A path means one file wherever it is read or written: `~`, `$VARS` and relative paths are
expanded the same way for Hydra's run folder, the caches, the leaderboard and the tools; and
every run gets a folder of its own, whatever the clock says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_bench.errors import UserError
from ssl_bench.leaderboard import read
from ssl_bench.paths import PATH_SETTINGS, normalize_paths, resolve_path
from tests.conftest import PROJECT_ROOT


def test_resolve_path_expands_home_variables_and_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SSL_BENCH_TEST_SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.chdir(tmp_path)
    assert resolve_path("~/runs") == tmp_path / "home" / "runs"
    assert resolve_path("$SSL_BENCH_TEST_SCRATCH/lb.csv") == tmp_path / "scratch" / "lb.csv"
    assert resolve_path("${SSL_BENCH_TEST_SCRATCH}/x") == tmp_path / "scratch" / "x"
    assert resolve_path("runs/../runs/lb.csv") == tmp_path / "runs" / "lb.csv"
    assert resolve_path(tmp_path / "abs") == tmp_path / "abs"


@pytest.mark.parametrize("text", ["$SSL_BENCH_NOT_SET/runs", "~/${SSL_BENCH_NOT_SET_EITHER}"])
def test_an_unset_variable_is_an_error_not_a_folder(text, monkeypatch):
    monkeypatch.delenv("SSL_BENCH_NOT_SET", raising=False)
    monkeypatch.delenv("SSL_BENCH_NOT_SET_EITHER", raising=False)
    with pytest.raises(UserError, match="which is not set"):
        resolve_path(text, "paths.runs_dir")


def test_normalize_paths_covers_every_path_setting(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    # quoted, as Hydra's override grammar needs for `~` and `$` (a shell expands them unquoted)
    cfg = make_cfg("data=image_folder", "data.root='~/images'", "paths.runs_dir=rel/runs",
                   "show.path='~/show.png'", "paths.cache_dir='$HOME/cache'")
    normalize_paths(cfg)
    assert cfg.data.root == str(tmp_path / "home" / "images")
    assert cfg.paths.runs_dir == str(tmp_path / "rel" / "runs")
    assert cfg.leaderboard.path == str(tmp_path / "rel" / "runs" / "leaderboard.csv")
    assert cfg.show.path == str(tmp_path / "home" / "show.png")
    assert cfg.paths.cache_dir == cfg.data.cache_dir == str(tmp_path / "home" / "cache")
    assert all(not str(v).startswith(("~", "$")) for v in
               [cfg.data.root, cfg.paths.runs_dir, cfg.show.path, cfg.paths.cache_dir])
    assert {"paths.runs_dir", "leaderboard.path", "data.root", "backbone.genotype"} <= set(PATH_SETTINGS)


def _image_tree(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png")


def _ssl_bench(cwd: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssl_bench", "profile=smoke", "progress=false",
                           "task=random", "eval.probes.enabled=false", "eval.labels_per_class=[2]",
                           "eval.min_steps=2", "eval.max_steps=2", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_every_path_setting_writes_and_reads_the_same_files(tmp_path):
    """Through the real command, from another working directory: `~` for the runs, a
    variable for the leaderboard, relative paths for the data and the cache. The second run
    must find the first one's rows (it reads where the first wrote) and nothing may land in
    a folder literally named `~` or `$...`."""
    work, home = tmp_path / "work", tmp_path / "home"
    _image_tree(work / "images")
    env = {**os.environ, "HOME": str(home), "LB_DIR": str(tmp_path / "boards")}
    args = ["data=image_folder", "data.root=images", "paths.runs_dir='~/runs'",
            "leaderboard.path='$LB_DIR/lb.csv'", "paths.cache_dir=./cache"]
    first = _ssl_bench(work, env, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    rows = read(tmp_path / "boards" / "lb.csv")
    assert len(rows) == 1
    run_dir = Path(rows["run_dir"].iloc[0])
    assert run_dir.is_relative_to(home / "runs") and (run_dir / "config.yaml").exists()
    assert list((work / "cache").iterdir())  # the decoded image folder
    second = _ssl_bench(work, env, *args)
    assert second.returncode == 0 and "already finished" in second.stdout, second.stderr[-3000:]
    strays = [p for p in tmp_path.rglob("*") if p.name.startswith(("~", "$"))]
    assert not strays, strays


def _run_dir_of_a_new_process(tmp_path: Path) -> str:
    code = ("from hydra import compose, initialize_config_dir\n"
            "from ssl_bench.cli import CONF_DIR\n"
            "with initialize_config_dir(config_dir=CONF_DIR, version_base='1.3'):\n"
            "    cfg = compose('config', overrides=['paths.runs_dir=runs'], return_hydra_config=True)\n"
            "print(cfg.hydra.run.dir, cfg.hydra.sweep.dir)\n")
    return subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=120, check=True).stdout.strip()


@pytest.mark.slow
def test_two_runs_get_two_folders_whatever_the_clock_says(tmp_path):
    """The folder name holds the start second and a random tag of the process: two
    processes started in the same second still write to different folders."""
    tags = []
    for _ in range(2):
        run_dir, sweep_dir = _run_dir_of_a_new_process(tmp_path).split()
        assert Path(run_dir).is_absolute() and Path(sweep_dir).is_absolute()
        tag = run_dir.rsplit("_", 1)[-1]
        assert sweep_dir.endswith(f"_{tag}") and len(tag) == 6
        tags.append(tag)
    assert tags[0] != tags[1]
