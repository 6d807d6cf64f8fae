"""Crash safety: `kill -9` in the middle of pretraining costs nothing already computed.

The rerun of the same command resumes from the last epoch's checkpoint and ends with the
same leaderboard rows (same keys, same accuracies) as a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ssl_bench.leaderboard import KEY
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow  # kill -9 of a real CLI process, then reruns


# long enough pretraining (8 epochs) to be killed after its first checkpoint
ARGS = ("task=rotation", "profile=smoke", "data=synthetic", "data.num_train=600", "data.num_test=200",
        "train.epochs=8", "train.steps_per_epoch=6", "train.batch_size=32", "threads=1",
        "eval.probes.enabled=false", "progress=false")
TIMES = ["pretrain_seconds", "eval_seconds", "started_at", "finished_at", "run_dir", "pretrain_reused",
         "git_sha"]


def _command(runs: Path) -> list[str]:
    return [sys.executable, "-m", "ssl_bench", *ARGS, f"paths.runs_dir={runs}",
            f"paths.cache_dir={runs.parent / 'cache'}"]


def lower_priority() -> None:
    """`preexec_fn` of a job the test watches and then stops: on a loaded machine the test
    must see the job's progress before the job is done, so the job yields the CPU first; and
    Ctrl-C takes its default action even when the test itself was started with SIGINT
    ignored (a background `cmd &` of a non-interactive shell), which the job would inherit."""
    os.nice(10)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _epochs_logged(runs: Path) -> int:
    files = list((runs / "pretrain").glob("*/metrics.jsonl"))
    if not files:
        return 0
    return sum(1 for line in files[0].read_text().splitlines() if '"epoch"' in line)


def _rows(runs: Path) -> pd.DataFrame:
    table = pd.read_csv(runs / "leaderboard.csv")
    return table.drop(columns=TIMES).sort_values(KEY).reset_index(drop=True)


def test_kill_during_pretraining_then_rerun_matches_an_uninterrupted_run(tmp_path):
    killed, clean = tmp_path / "killed" / "runs", tmp_path / "clean" / "runs"
    proc = subprocess.Popen(_command(killed), cwd=PROJECT_ROOT, start_new_session=True,
                            preexec_fn=lower_priority,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while _epochs_logged(killed) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = _epochs_logged(killed)
    assert 2 <= done_at_kill < 8, f"pretraining was not killed mid-way ({done_at_kill} epochs)"
    assert not (killed / "leaderboard.csv").exists()
    (folder,) = (killed / "pretrain").iterdir()
    assert (folder / "checkpoint.pt").exists() and not (folder / "pretrain.json").exists()

    rerun = subprocess.run(_command(killed), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming pretraining" in rerun.stdout + rerun.stderr
    epochs = [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()
              if '"epoch"' in line]
    assert epochs == list(range(1, 9))  # each epoch logged once, none lost or repeated

    uninterrupted = subprocess.run(_command(clean), cwd=PROJECT_ROOT, capture_output=True, text=True,
                                   timeout=600)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    resumed, reference = _rows(killed), _rows(clean)
    assert not resumed.duplicated(subset=KEY).any()
    pd.testing.assert_frame_equal(resumed, reference)
