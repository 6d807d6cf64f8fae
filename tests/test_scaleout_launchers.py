"""Scale-out: Hydra launchers (joblib on one machine, SLURM on a cluster) and results that
stay exact when many workers write them at once.

The SLURM launcher cannot run here; its config is composed and rendered into the sbatch
script submitit would submit. Everything else runs for real, in separate processes: a joblib
sweep, eight processes hammering one leaderboard, a writer killed while it holds the lock,
and two processes asking for the same pretraining at the same moment.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock, Timeout
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from ssl_bench.cli import CONF_DIR
from ssl_bench.leaderboard import COLUMNS, KEY, append_rows, read
from ssl_bench.paths import resolve_path
from ssl_bench.run import wanted_rows
from ssl_bench.runlog import atomic_write_bytes, folder_lock, replacing
from tests.conftest import PROJECT_ROOT

# small data and one thread per job: four jobs on two workers still finish in seconds
FAST = ("profile=smoke", "data=synthetic", "data.num_train=500", "data.num_test=200",
        "train.batch_size=32", "eval.probes.logreg.max_iter=50", "threads=1", "progress=false")


def _python(code: str, *args: object, **popen: object) -> subprocess.Popen:
    """Run `code` in a fresh interpreter: a separate process, as a sweep worker is."""
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _finish(procs: list[subprocess.Popen], timeout: float = 300) -> list[str]:
    """Wait for every process; fail with its stderr if one failed. Returns their stdouts."""
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-3000:]
        outs.append(out)
    return outs


def _wait_for(predicate, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _assert_well_formed(path: Path) -> None:
    """Every line of the CSV parses into exactly the header's fields (no torn or merged lines)."""
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    header, rows = lines[0], lines[1:]
    assert header[:len(COLUMNS)] == COLUMNS
    assert all(len(r) == len(header) for r in rows), "a torn or interleaved line"
    table = read(path)
    assert table[KEY].notna().all().all()
    assert not table.duplicated(subset=KEY).any()


# ---------------------------------------------------------------- joblib sweep


@pytest.mark.slow
def test_joblib_sweep_with_two_workers_writes_exactly_the_expected_rows(make_cfg, tmp_path):
    tasks, seeds = ["rotation", "random"], [0, 1]
    paths = (f"paths.runs_dir={tmp_path / 'runs'}", f"paths.cache_dir={tmp_path / 'cache'}")
    res = subprocess.run(
        [sys.executable, "-m", "ssl_bench", "-m", f"task={','.join(tasks)}",
         f"seed={','.join(map(str, seeds))}", *FAST, *paths,
         "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stdout + res.stderr
    assert "Joblib.Parallel(n_jobs=2" in log and "launching 4 jobs" in log

    # what each job must produce, from the same composed config
    expected = {(task, seed, protocol, k) for task in tasks for seed in seeds
                for protocol, k in wanted_rows(make_cfg(f"task={task}", f"seed={seed}", *FAST))}
    path = tmp_path / "runs" / "leaderboard.csv"
    _assert_well_formed(path)
    table = read(path)
    got = list(zip(table.task, table.seed, table.protocol, table.labels_per_class))
    assert len(got) == len(set(got)) == len(expected)
    assert set(got) == expected
    assert table.groupby(["task", "seed"]).run_id.nunique().eq(1).all()
    assert table.run_id.nunique() == len(tasks) * len(seeds)
    assert table.test_acc.between(0, 100).all()
    assert (table.pretrain_id.notna() == (table.task == "rotation")).all()
    assert len(list((tmp_path / "runs" / "multirun").glob("*/*/results.json"))) == 4
    assert len(list((tmp_path / "runs" / "pretrain").iterdir())) == len(seeds)  # rotation's


# ---------------------------------------------------------------- SLURM launcher config

# conf/hydra/launcher/slurm.yaml, as its comments (and the README) document it
SLURM_DOCUMENTED = {"partition": None, "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32,
                    "timeout_min": 240, "max_num_timeout": 3, "array_parallelism": 30,
                    "name": "ssl_bench", "nodes": 1, "tasks_per_node": 1}


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def _make_dry_run(target: str, *variables: str) -> list[str]:
    """The ssl-bench command line `make TARGET` would run, split into its arguments."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    res = subprocess.run(["make", "-n", "--no-print-directory", target, *variables],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    text = res.stdout.replace("\\\n", " ")
    (line,) = [x for x in text.splitlines() if "/ssl-bench experiment=" in x]
    return shlex.split(line)[1:]


def _one_job(overrides: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """A sweep's first job's overrides (compose takes no sweeps), and the swept values."""
    job, sweeps = [], {}
    for text, override in zip(overrides, OverridesParser.create().parse_overrides(overrides)):
        if override.is_sweep_override():
            key, values = override.get_key_element(), list(override.sweep_string_iterator())
            sweeps[key] = values
            text = f"{key}={values[0]}"
        job.append(text)
    return job, sweeps


def test_slurm_launcher_config_composes_with_the_documented_settings():
    cfg = _compose("experiment=benchmark", "hydra/launcher=slurm")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert {k: launcher[k] for k in SLURM_DOCUMENTED} == SLURM_DOCUMENTED
    assert list(launcher.setup) == ["export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK"]
    # logs and results next to the sweep, under paths.runs_dir (the shared file system),
    # made absolute as every path setting is (ssl_bench.paths)
    runs_dir = resolve_path(cfg.paths.runs_dir)
    assert launcher.submitit_folder.startswith(f"{runs_dir}/benchmark/")
    assert cfg.hydra.sweep.dir.startswith(f"{runs_dir}/benchmark/")
    assert cfg.device == "auto"
    assert len(cfg.hydra.sweeper.params.task.split(",")) * len(cfg.hydra.sweeper.params.seed.split(",")) \
        == launcher.array_parallelism  # the whole benchmark runs at once

    # the Makefile's command, with the documented variables, composes to what it says
    overrides, sweeps = _one_job(_make_dry_run(
        "benchmark-slurm", "PARTITION=gpu", "GPUS=2", "TIME_MIN=720", "PROFILE=paper",
        "ARGS=hydra.launcher.mem_gb=64 paths.runs_dir=/shared/runs"))
    assert len(sweeps["task"]) * len(sweeps["seed"]) == 30
    cfg = _compose(*overrides)
    launcher = cfg.hydra.launcher
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min, launcher.mem_gb) \
        == ("gpu", 2, 720, 64)
    assert cfg.progress is False and cfg.profile_name == "paper"
    assert cfg.leaderboard.path == "/shared/runs/leaderboard.csv"
    assert launcher.submitit_folder.startswith("/shared/runs/benchmark/")
    assert _compose(*_one_job(_make_dry_run("benchmark-slurm"))[0]).hydra.launcher.partition is None


def test_slurm_launcher_settings_become_the_documented_sbatch_lines(tmp_path, monkeypatch):
    """Render the job script submitit would submit (no cluster: a stand-in `srun` on PATH)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")

    cfg = _compose("experiment=benchmark", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                   f"paths.runs_dir={tmp_path / 'runs'}")
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    # the same split of parameters as the plugin's launch(): shared ones bare, the rest slurm_*
    executor = submitit.AutoExecutor(folder=tmp_path / "sub", cluster="slurm",
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    for key in ("submitit_folder", "_target_"):
        params.pop(key)
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -u -m job", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --mem=32GB", "#SBATCH --time=240", "#SBATCH --job-name=ssl_bench",
                 "#SBATCH --signal=USR2@120", "export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK"):
        assert line in script.splitlines(), line


def test_joblib_launcher_composes_from_the_plugin():
    cfg = _compose("experiment=benchmark", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2
    args = _make_dry_run("benchmark", "ARGS=hydra/launcher=joblib hydra.launcher.n_jobs=2")
    assert args[-2:] == ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    assert _compose(*_one_job(args)[0]).hydra.launcher.n_jobs == 2


# ---------------------------------------------------------------- the leaderboard under fire

WRITER = """
import sys, time
from pathlib import Path
from ssl_bench.leaderboard import COLUMNS, append_rows
path, writer, n, go = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
while not go.exists():  # start together, after the imports
    time.sleep(0.005)
for i in range(n):
    row = {c: f"{c}-{writer}-{i}" for c in COLUMNS}
    row.update(run_id=f"w{writer}-{i}", protocol="conv3_linear", labels_per_class=5 + i % 3,
               seed=writer, test_acc=writer + i / 1000, pretrain_reused=bool(i % 2),
               task="rotation, \\"quoted\\"\\nand multi-line")  # CSV quoting must survive too
    append_rows(path, [row])
"""


@pytest.mark.slow
def test_eight_processes_appending_fifty_rows_each_leave_exactly_400_rows(tmp_path):
    path, go = tmp_path / "leaderboard.csv", tmp_path / "go"
    writers, per_writer = 8, 50
    procs = [_python(WRITER, path, w, per_writer, go) for w in range(writers)]
    go.touch()
    seen = 0
    while any(p.poll() is None for p in procs):  # a reader meanwhile: always a whole file
        table = read(path)
        assert list(table.columns) == COLUMNS and len(table) >= seen and table.run_id.notna().all()
        seen = len(table)
        time.sleep(0.05)
    _finish(procs)

    _assert_well_formed(path)
    table = read(path)
    assert len(table) == writers * per_writer
    assert sorted(table.run_id) == sorted(f"w{w}-{i}" for w in range(writers) for i in range(per_writer))
    for row in table.itertuples():
        w, i = map(int, row.run_id[1:].split("-"))
        assert (row.seed, row.labels_per_class, row.test_acc) == (w, 5 + i % 3, pytest.approx(w + i / 1000))
        assert row.pretrain_reused == bool(i % 2) and row.task == 'rotation, "quoted"\nand multi-line'
        assert row.run_dir == f"run_dir-{w}-{i}"
    assert not list(tmp_path.glob(".leaderboard.csv.*")), "temporary files left behind"


KILLED_MID_WRITE = """
import sys, time
from pathlib import Path
import ssl_bench.leaderboard as leaderboard
from ssl_bench.runlog import replacing
path, ready = Path(sys.argv[1]), Path(sys.argv[2])

def half_written(target, data):  # killed halfway through writing the new file
    with replacing(target) as f:
        f.write(data[: len(data) // 2])
        f.flush()
        ready.touch()
        time.sleep(600)

leaderboard.atomic_write_bytes = half_written
leaderboard.append_rows(path, [{"run_id": "killed", "protocol": "conv3_linear", "labels_per_class": 5}])
"""


@pytest.mark.slow
def test_a_writer_killed_while_holding_the_lock_loses_nothing_and_blocks_no_one(tmp_path):
    path, ready = tmp_path / "leaderboard.csv", tmp_path / "ready"
    before = [{"run_id": f"r{i}", "protocol": "conv3_linear", "labels_per_class": 5, "test_acc": i}
              for i in range(3)]
    append_rows(path, before)
    original = path.read_bytes()
    proc = _python(KILLED_MID_WRITE, path, ready)
    _wait_for(lambda: ready.exists() or proc.poll() is not None, "the writer to take the lock")
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    with pytest.raises(Timeout):  # it really holds the lock ...
        FileLock(str(path) + ".lock").acquire(timeout=0.2)
    proc.send_signal(signal.SIGKILL)  # ... when it dies
    proc.communicate(timeout=30)

    assert path.read_bytes() == original  # the half-written file never replaced it
    assert list(tmp_path.glob(".leaderboard.csv.*.tmp")), "expected the killed writer's temporary file"
    with FileLock(str(path) + ".lock", timeout=5):  # flock: released by the kernel on death
        pass
    append_rows(path, [{"run_id": "after", "protocol": "conv3_linear", "labels_per_class": 5}])
    _assert_well_formed(path)
    assert sorted(read(path).run_id) == ["after", "r0", "r1", "r2"]


def test_replacing_uses_a_fresh_temporary_file_per_writer_and_keeps_the_mode(tmp_path):
    """Two writers in one process (same pid, as on two cluster nodes) never share a temp file."""
    path = tmp_path / "cache.pt"
    with replacing(path) as first, replacing(path) as second:
        assert first.name != second.name
        first.write(b"first, complete")
        second.write(b"second, complete")
    assert path.read_bytes() == b"first, complete"  # the last rename wins, whole
    assert not list(tmp_path.glob(".cache.pt.*"))

    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0o600
    path.chmod(0o664)  # e.g. a leaderboard shared with a group
    atomic_write_bytes(path, b"again")
    assert stat.S_IMODE(path.stat().st_mode) == 0o664

    with pytest.raises(RuntimeError), replacing(path) as f:
        f.write(b"never lands")
        raise RuntimeError("killed")
    assert path.read_bytes() == b"again" and not list(tmp_path.glob(".cache.pt.*"))


# ---------------------------------------------------------------- the pretraining cache

SAME_PRETRAINING = """
import json, sys, time
from pathlib import Path
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from ssl_bench.cli import CONF_DIR
from ssl_bench.run import run
tmp, me, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
overrides = json.loads(sys.argv[4]) + [f"leaderboard.path={tmp / me / 'leaderboard.csv'}"]
with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
    cfg = compose("config", overrides=overrides)
(tmp / f"ready-{me}").touch()  # a barrier: both call run() at the same moment
while len(list(tmp.glob("ready-*"))) < 2:
    time.sleep(0.005)
start = time.time()
rows = run(cfg, tmp / me / "run")
plain = lambda value: value.item() if hasattr(value, "item") else str(value)  # numpy scalars
out.write_text(json.dumps({"start": start, "end": time.time(), "rows": rows}, default=plain))
"""


@pytest.mark.slow
def test_two_processes_with_the_same_pretraining_train_it_once(tmp_path):
    # one runs_dir (so one pretraining cache), separate leaderboards (so neither skips the run)
    overrides = [*FAST, "task=rotation", "seed=0", "eval.probes.enabled=false",
                 "eval.labels_per_class=[5]", "train.epochs=3",
                 f"paths.runs_dir={tmp_path / 'runs'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    procs = [_python(SAME_PRETRAINING, tmp_path, name, tmp_path / f"{name}.json", json.dumps(overrides))
             for name in ("a", "b")]
    _finish(procs)
    results = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("a", "b")]
    rows = [r["rows"] for r in results]
    assert all(len(r) == 1 for r in rows)
    reused = [bool(r[0]["pretrain_reused"]) for r in rows]
    assert sorted(reused) == [False, True], "exactly one process trains, the other reuses"
    trainer, waiter = (results[0], results[1]) if not reused[0] else (results[1], results[0])
    # they overlapped: the one that reused had started before the training ended, so it waited
    assert waiter["start"] < trainer["end"] - trainer["rows"][0]["eval_seconds"]

    (folder,) = (tmp_path / "runs" / "pretrain").iterdir()
    assert {r[0]["pretrain_id"] for r in rows} == {folder.name}
    metrics = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [m.get("epoch") for m in metrics] == [1, 2, 3, None]  # trained once, not twice
    # the same weights: the same pretext metric and the same evaluation, to the last digit
    first, second = rows[0][0], rows[1][0]
    for key in ("pretext_metric", "test_acc", "pretrain_seconds", "run_id"):
        assert first[key] == second[key], key


@pytest.mark.slow
def test_a_job_waiting_for_a_shared_pretraining_says_so(tmp_path, caplog):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; "
         "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(1.5); "
         "open(sys.argv[2], 'w').close(); lock.release()",
         str(tmp_path / ".lock"), str(tmp_path / "letting-go")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with caplog.at_level(logging.INFO, logger="ssl_bench"), folder_lock(tmp_path, "this pretraining"):
        assert (tmp_path / "letting-go").exists(), "entered before the other job let go of the lock"
    holder.wait()
    assert "waiting for another job to finish this pretraining" in caplog.text
