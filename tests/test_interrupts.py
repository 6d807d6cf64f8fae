"""Ctrl-C and SIGTERM: one line, exit 130 / 143, and the next run continues."""

import json
import os
import signal
import subprocess
import time

import pytest

from ssl_bench.interrupts import interruptible, stop_cleanly
from tests.conftest import PROJECT_ROOT
from tests.test_crash import _command, _epochs_logged, lower_priority


def test_ctrl_c_becomes_one_line_and_status_130(capsys):
    with pytest.raises(SystemExit) as info, stop_cleanly("ssl-bench"):
        raise KeyboardInterrupt
    assert info.value.code == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("ssl-bench: interrupted") and "run the same command again" in err
    assert "\n" not in err


def test_sigterm_becomes_one_line_and_status_143_and_the_old_handler_returns(capsys):
    before = signal.getsignal(signal.SIGTERM)

    @interruptible("ssl-bench-leaderboard")
    def main() -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        return 0

    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 143
    assert capsys.readouterr().err.strip().startswith("ssl-bench-leaderboard: terminated")
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.slow  # a real CLI process, signalled mid-pretraining, then rerun
@pytest.mark.parametrize(("sig", "status", "word"), [(signal.SIGINT, 130, "interrupted"),
                                                     (signal.SIGTERM, 143, "terminated")])
def test_a_signalled_run_says_so_in_one_line_and_the_rerun_continues(tmp_path, sig, status, word):
    runs = tmp_path / "runs"
    proc = subprocess.Popen(_command(runs), cwd=PROJECT_ROOT, start_new_session=True,
                            preexec_fn=lower_priority,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while _epochs_logged(runs) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, sig)  # what a terminal's Ctrl-C or a scheduler's stop does
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == status, err[-3000:]
    assert f"ssl-bench: {word}" in err and "Traceback" not in err, err[-3000:]
    assert not (runs / "leaderboard.csv").exists()

    rerun = subprocess.run(_command(runs), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming pretraining" in rerun.stdout + rerun.stderr
    (folder,) = (runs / "pretrain").iterdir()
    epochs = [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()
              if '"epoch"' in line]
    assert epochs == list(range(1, 9))
