"""Resumability: batch streams, interrupted pretraining, reused runs, a killed multirun."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from ssl_bench import checkpoint as checkpoint_module
from ssl_bench import train
from ssl_bench.batching import index_batches
from ssl_bench.cli import CONF_DIR
from ssl_bench.data import DataSplits
from ssl_bench.leaderboard import KEY
from ssl_bench.methods import pretrained_methods
from ssl_bench.run import build_backbone, run
from ssl_bench.tasks import build_task
from tests.conftest import PROJECT_ROOT


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the machine's other core is busy, and CPU results stay bit-exact."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def expected_keys(cfg) -> set[tuple[str, int]]:
    """(protocol, K) rows a run of `cfg` must produce, read from the config itself."""
    keys = {(cfg.eval.protocol, int(k)) for k in cfg.eval.labels_per_class}
    probes = cfg.eval.probes
    if cfg.task.evaluation == "frozen" and probes.enabled:
        protocols = [f"linear_probe_{s}" for s in probes.linear_stages]
        protocols += [f"knn_{s}" for s in probes.knn_stages]
        protocols += [f"knn_cosine_{s}" for s in probes.cosine_knn.stages]
        probe_ks = probes.get("labels_per_class", cfg.eval.labels_per_class)  # own list, or eval's
        keys |= {(p, int(k)) for p in protocols for k in probe_ks}
    if cfg.task.evaluation == "frozen" and cfg.eval.finetune.enabled:
        keys |= {("finetune", int(k)) for k in cfg.eval.finetune.labels_per_class}
    return keys


def keys_of(table: pd.DataFrame) -> list[tuple[str, int]]:
    return list(zip(table["protocol"], table["labels_per_class"].astype(int)))


def assert_unique_keys(table: pd.DataFrame) -> None:
    assert not table.duplicated(subset=KEY).any(), table[table.duplicated(subset=KEY, keep=False)]


# ---------------------------------------------------------------- 1. index_batches


@pytest.mark.parametrize("n, batch_size", [(10, 3), (12, 4), (7, 7), (5, 8), (1, 4)])
def test_index_batches_resumed_at_any_step_matches_the_uninterrupted_stream(n, batch_size):
    per_pass = max(n // min(batch_size, n), 1)
    total = 4 * per_pass + 3
    full = [b.tolist() for b in itertools.islice(index_batches(n, batch_size, seed=7), total)]
    # every step from 0 up to past the third pass: pass boundaries (multiples of per_pass)
    # and steps in the middle of a pass
    for start in range(0, 3 * per_pass + 2):
        resumed = index_batches(n, batch_size, seed=7, start_step=start)
        got = [b.tolist() for b in itertools.islice(resumed, total - start)]
        assert got == full[start:], f"start_step={start}"
    # each pass is a permutation cut into full batches; a set smaller than a batch is used whole
    size = min(batch_size, n)
    assert all(len(b) == size for b in full)
    for p in range(3):
        seen = sum(full[p * per_pass:(p + 1) * per_pass], [])
        assert len(set(seen)) == len(seen) == per_pass * size
    if batch_size >= n:
        assert all(sorted(b) == list(range(n)) for b in full)


def test_index_batches_depend_on_the_seed():
    a = [b.tolist() for b in itertools.islice(index_batches(50, 10, seed=0), 10)]
    b = [b.tolist() for b in itertools.islice(index_batches(50, 10, seed=1), 10)]
    assert a != b


# ---------------------------------------------------------------- 2. pretraining resume


def _pretrain_setup(cfg, data):
    """Backbone and task built as `run.pretrained` builds them, from fixed seeds."""
    backbone = build_backbone(cfg.backbone, int(cfg.seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        task = build_task(cfg.task.module, backbone, data)
    return backbone, task


def _pretrain(cfg, data, folder: Path):
    backbone, task = _pretrain_setup(cfg, data)
    folder.mkdir(parents=True, exist_ok=True)  # as run.pretrained does
    torch.manual_seed(99)  # the global generator as a fresh process would leave it
    result = train.pretrain(backbone, task, data, cfg.train, folder, torch.device("cpu"),
                            int(cfg.seed), channels_last=True, progress=False)
    return result, backbone, task


def _metric_lines(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if x.strip()]


def test_interrupted_pretraining_resumes_to_the_same_weights_and_metrics(make_cfg, tiny_data, tmp_path,
                                                                         monkeypatch):
    # 120 images, batches of 16: 7 steps per pass, 3 steps per epoch -> 9 steps; the resume
    # at step 6 is mid-pass and the run crosses a pass boundary after it
    cfg = make_cfg("profile=smoke", "data=synthetic", "task=rotation", "train.epochs=3",
                   "train.steps_per_epoch=3", "train.batch_size=16", "train.pretext_eval_images=100")
    data = DataSplits("synthetic", tiny_data.train.subset(torch.arange(120)),
                      tiny_data.test.subset(torch.arange(100)), source="tiny_data, first images")
    result_a, backbone_a, task_a = _pretrain(cfg, data, tmp_path / "A")
    lines_a = _metric_lines(tmp_path / "A")
    assert [x.get("epoch") for x in lines_a] == [1, 2, 3, None]

    real_save = checkpoint_module.atomic_torch_save
    # two kill points: right after epoch 2's checkpoint, and after epoch 3's metric line but
    # before its checkpoint (that line must not be kept twice)
    crash_points = {"after_save": (2, True), "before_save": (3, False)}
    for name, (crash_call, save_first) in crash_points.items():
        folder = tmp_path / f"B_{name}"
        calls = []

        def crashing_save(path, obj, crash_call=crash_call, save_first=save_first, calls=calls):
            calls.append(obj["epoch"])
            if len(calls) == crash_call:
                if save_first:
                    real_save(path, obj)
                raise KeyboardInterrupt
            real_save(path, obj)

        monkeypatch.setattr(checkpoint_module, "atomic_torch_save", crashing_save)
        with pytest.raises(KeyboardInterrupt):
            _pretrain(cfg, data, folder)
        monkeypatch.setattr(checkpoint_module, "atomic_torch_save", real_save)
        assert torch.load(folder / "checkpoint.pt", weights_only=True)["epoch"] == 2
        before = [x.get("epoch") for x in _metric_lines(folder)]
        assert before == ([1, 2] if save_first else [1, 2, 3])

        result_b, backbone_b, task_b = _pretrain(cfg, data, folder)
        for ref, got in ((backbone_a.state_dict(), backbone_b.state_dict()),
                         (task_a.state_dict(), task_b.state_dict())):
            assert ref.keys() == got.keys()
            for key in ref:
                assert torch.equal(ref[key], got[key]), f"{name}: {key} differs"
        lines_b = _metric_lines(folder)
        assert [x.get("epoch") for x in lines_b] == [1, 2, 3, None], name
        for a, b in zip(lines_a, lines_b):
            for key in ("epoch", "step", "loss", "train_accuracy", "lr", "test_accuracy"):
                assert a.get(key) == b.get(key), f"{name}: {key} of {a.get('epoch')}"
        assert (result_b.epochs, result_b.steps) == (result_a.epochs, result_a.steps) == (3, 9)
        assert result_b.final_loss == result_a.final_loss
        assert result_b.pretext_metric == result_a.pretext_metric
        assert result_b.seconds >= 0


def test_pretraining_whose_epochs_are_all_done_only_reevaluates(make_cfg, tiny_data, tmp_path):
    cfg = make_cfg("profile=smoke", "data=synthetic", "task=rotation", "train.epochs=2",
                   "train.steps_per_epoch=2", "train.batch_size=32", "train.pretext_eval_images=100")
    first, backbone_a, _ = _pretrain(cfg, tiny_data, tmp_path / "A")
    checkpoint = (tmp_path / "A" / "checkpoint.pt").read_bytes()
    again, backbone_b, _ = _pretrain(cfg, tiny_data, tmp_path / "A")
    assert (tmp_path / "A" / "checkpoint.pt").read_bytes() == checkpoint  # no epoch trained again
    assert [x.get("epoch") for x in _metric_lines(tmp_path / "A")] == [1, 2, None]
    assert (again.epochs, again.steps, again.final_loss, again.train_metric, again.pretext_metric) == \
        (first.epochs, first.steps, first.final_loss, first.train_metric, first.pretext_metric)
    for key, value in backbone_a.state_dict().items():
        assert torch.equal(value, backbone_b.state_dict()[key]), key


# ---------------------------------------------------------------- 3. reuse by run.run

FAST = ("profile=smoke", "data=synthetic", "data.num_train=500", "data.num_test=200",
        "train.batch_size=32", "train.steps_per_epoch=2", "train.pretext_eval_images=100",
        "eval.min_steps=5", "eval.max_steps=5", "eval.probes.logreg.max_iter=50")


def _fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def test_a_finished_run_is_skipped_and_a_new_k_adds_only_its_rows(make_cfg, tmp_path):
    cfg = make_cfg(*FAST, "task=rotation")
    leaderboard = Path(cfg.leaderboard.path)
    wanted = expected_keys(cfg)
    assert len(wanted) == 16  # conv3_linear + 3 linear probes + 2 + 2 k-NN, x K in {5, 20}

    rows = run(cfg, tmp_path / "run1")
    folders = list((tmp_path / "runs" / "pretrain").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("rotation_synthetic_small_s0_")
    folder = folders[0]
    checkpoint = _fingerprint(folder / "checkpoint.pt")
    done = (folder / "pretrain.json").read_bytes()
    metrics = (folder / "metrics.jsonl").read_bytes()
    first = pd.read_csv(leaderboard)
    assert len(first) == len(rows) == len(wanted) and set(keys_of(first)) == wanted
    assert first.run_id.nunique() == 1 and not first.pretrain_reused.any()
    assert set(first.pretrain_id) == {folder.name}

    again = run(cfg, tmp_path / "run2")  # same config: nothing to do
    second = pd.read_csv(leaderboard)
    assert _fingerprint(folder / "checkpoint.pt") == checkpoint
    assert (folder / "pretrain.json").read_bytes() == done
    assert (folder / "metrics.jsonl").read_bytes() == metrics
    assert len(again) == len(second) == len(first)
    assert_unique_keys(second)
    pd.testing.assert_frame_equal(second, first)

    more = make_cfg(*FAST, "task=rotation", "eval.labels_per_class=[5,10,20]")
    run(more, tmp_path / "run3")
    third = pd.read_csv(leaderboard)
    assert_unique_keys(third)
    assert third.run_id.nunique() == 1  # adding a K keeps the run id
    new = third[third.labels_per_class == 10]
    old = third[third.labels_per_class != 10]
    assert len(new) == len(wanted) // 2 == 8 and set(keys_of(third)) == expected_keys(more)
    assert len(third) == len(first) + len(new)
    merged = first.merge(old, on=KEY, suffixes=("_first", "_now"))
    assert len(merged) == len(first)
    assert (merged.test_acc_first == merged.test_acc_now).all()
    assert (merged.finished_at_first == merged.finished_at_now).all()
    assert (merged.run_dir_now == str(tmp_path / "run1")).all()  # written by the first call
    assert new.pretrain_reused.astype(bool).all()  # loaded from the cache, not retrained
    assert set(new.pretrain_id) == {folder.name}
    assert (new.pretext_metric == first.pretext_metric.iloc[0]).all()
    assert _fingerprint(folder / "checkpoint.pt") == checkpoint
    assert (folder / "pretrain.json").read_bytes() == done
    assert (folder / "metrics.jsonl").read_bytes() == metrics
    assert len(list((tmp_path / "runs" / "pretrain").iterdir())) == 1

    # the rows computed bit by bit equal those of one fresh run asking for every K at once
    fresh_cfg = make_cfg(*FAST, "task=rotation", "eval.labels_per_class=[5,10,20]",
                         f"paths.runs_dir={tmp_path / 'fresh'}")
    run(fresh_cfg, tmp_path / "fresh_run")
    fresh = pd.read_csv(fresh_cfg.leaderboard.path)
    both = third.merge(fresh, on=KEY, suffixes=("_incremental", "_fresh"))
    assert len(both) == len(third) == len(fresh)
    assert (both.test_acc_incremental == both.test_acc_fresh).all()
    assert (both.pretext_metric_incremental == both.pretext_metric_fresh).all()


# ---------------------------------------------------------------- 4. killed multirun

SWEEP_FAST = ("threads=1", "data.num_train=500", "data.num_test=200", "train.batch_size=32",
              "eval.probes.logreg.max_iter=50")


def _sweep(tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "ssl_bench", "-m", "task=rotation,random", "seed=0", "profile=smoke",
            "data=synthetic", f"paths.runs_dir={tmp_path / 'runs'}",
            f"paths.cache_dir={tmp_path / 'cache'}", "progress=false", *SWEEP_FAST]


def _read(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame(columns=["task", "protocol", "labels_per_class"])


PRETRAINED = pretrained_methods()


@pytest.mark.parametrize("task", PRETRAINED)
def test_every_task_reuses_a_finished_pretraining(make_cfg, tmp_path, task):
    """A second evaluation seed loads the finished pretraining (layerwise: its decoders too)
    instead of training: no step is taken, the cache folder is untouched."""
    common = (*FAST, f"task={task}", "train.seed=0", "eval.probes.enabled=false",
              "eval.labels_per_class=[5]")
    run(make_cfg(*common, "seed=0"), tmp_path / "run0")
    (folder,) = (tmp_path / "runs" / "pretrain").iterdir()
    files = ("checkpoint.pt", "metrics.jsonl", "pretrain.json")
    before = {name: _fingerprint(folder / name) for name in files}
    (row,) = run(make_cfg(*common, "seed=1"), tmp_path / "run1")
    assert row["seed"] == 1 and bool(row["pretrain_reused"]) and row["pretrain_id"] == folder.name
    assert {name: _fingerprint(folder / name) for name in before} == before


@pytest.mark.parametrize("garbage", [b"", b"{not json", b'{"result": 3}', b'{"result": {"epochs": "two"}}',
                                     b'{"result": {"epochs": 2, "steps": 10}}'])
def test_an_unreadable_finished_record_is_not_trusted(make_cfg, tmp_path, garbage, caplog):
    """A torn or edited `pretrain.json` counts as unfinished: the pretraining resumes from its
    checkpoint (all epochs done, so no step is taken) and the record is written again."""
    common = (*FAST, "task=rotation", "train.seed=0", "eval.probes.enabled=false",
              "eval.labels_per_class=[5]")
    run(make_cfg(*common, "seed=0"), tmp_path / "run0")
    (folder,) = (tmp_path / "runs" / "pretrain").iterdir()
    checkpoint = _fingerprint(folder / "checkpoint.pt")
    (folder / "pretrain.json").write_bytes(garbage)
    (row,) = run(make_cfg(*common, "seed=1"), tmp_path / "run1")
    assert "ignoring" in caplog.text and "pretrain.json" in caplog.text
    assert not bool(row["pretrain_reused"]) and row["pretrain_id"] == folder.name
    assert isinstance(json.loads((folder / "pretrain.json").read_text())["result"], dict)
    assert _fingerprint(folder / "checkpoint.pt") == checkpoint  # resumed, nothing retrained


@pytest.mark.slow
def test_killed_multirun_continues_where_it_stopped(tmp_path):
    def composed(task):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose("config", overrides=[
                f"task={task}", "seed=0", "profile=smoke", "data=synthetic",
                f"paths.runs_dir={tmp_path / 'runs'}", *SWEEP_FAST])

    expected = {task: expected_keys(composed(task)) for task in ("rotation", "random")}
    assert all(len(keys) == 16 for keys in expected.values())
    leaderboard = Path(composed("rotation").leaderboard.path)

    out, err = open(tmp_path / "first.out", "w"), open(tmp_path / "first.err", "w")
    with out, err:
        proc = subprocess.Popen(_sweep(tmp_path), cwd=PROJECT_ROOT, stdout=out, stderr=err,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while True:
                table = _read(leaderboard)
                if set(keys_of(table[table.task == "rotation"])) >= expected["rotation"]:
                    break
                assert proc.poll() is None, (tmp_path / "first.err").read_text()[-3000:]
                assert time.monotonic() < deadline, "the rotation job's rows never appeared"
                time.sleep(0.1)
            finished_first = proc.poll() is not None  # a fast machine may finish both jobs
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    at_kill = _read(leaderboard)
    assert finished_first or proc.returncode == -signal.SIGKILL

    res = subprocess.run(_sweep(tmp_path), cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    final = pd.read_csv(leaderboard)
    assert_unique_keys(final)
    assert len(final) == sum(len(keys) for keys in expected.values()) == 32
    for task, keys in expected.items():
        part = final[final.task == task]
        assert sorted(keys_of(part)) == sorted(keys) and part.run_id.nunique() == 1, task
    # rows present when it was killed (all of rotation's, maybe some of random's) are kept,
    # not computed again
    kept = at_kill.merge(final, on=KEY, suffixes=("_then", "_now"))
    assert len(kept) == len(at_kill) >= len(expected["rotation"])
    assert (kept.finished_at_then == kept.finished_at_now).all()
    assert (kept.test_acc_then == kept.test_acc_now).all()
    assert (kept.run_dir_then == kept.run_dir_now).all()  # the first sweep's job folders
    rotation_id = final[final.task == "rotation"].run_id.iloc[0]
    assert f"{rotation_id} already finished" in res.stdout and "skipped" in res.stdout
    assert len(list((tmp_path / "runs" / "pretrain").iterdir())) == 1  # rotation's, trained once
